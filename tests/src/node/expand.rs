//! Kubernetes' `$(VAR)` expansion for container env values, command and args.
//!
//! The rules are kubelet's (`third_party/forked/golang/expansion`): `$(NAME)` becomes the
//! value of an already-defined variable, `$$` escapes a `$`, and a reference to an
//! undefined variable or an unclosed `$(` is left exactly as written.

use std::collections::HashMap;

/// Expands `$(VAR)` references in `input` with the variables in `vars`.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(open) = after.strip_prefix('(') {
            match open.find(')') {
                Some(close) => {
                    let name = &open[..close];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &open[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = open;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        [("POD_IP", "127.128.1.2"), ("NAME", "web-0"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn expands_defined_variables() {
        assert_eq!(
            expand("--listen=$(POD_IP):10911", &vars()),
            "--listen=127.128.1.2:10911"
        );
        assert_eq!(expand("$(NAME)$(NAME)", &vars()), "web-0web-0");
        assert_eq!(expand("a$(EMPTY)b", &vars()), "ab");
    }

    #[test]
    fn keeps_undefined_and_unclosed_references() {
        assert_eq!(expand("$(MISSING)", &vars()), "$(MISSING)");
        assert_eq!(expand("x$(POD_IP", &vars()), "x$(POD_IP");
        assert_eq!(expand("$NAME and $", &vars()), "$NAME and $");
    }

    #[test]
    fn double_dollar_escapes() {
        assert_eq!(expand("$$(NAME)", &vars()), "$(NAME)");
        assert_eq!(expand("cost: $$5", &vars()), "cost: $5");
    }
}
