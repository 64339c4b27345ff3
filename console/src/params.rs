//! Request parameters: decoded from the query string and the form body (spec §1, §7), each
//! given at most once, and read as typed values with the spec's validation; every error
//! names the field.

use std::collections::BTreeMap;

use crate::envelope::ApiError;

/// Longest parameter value accepted (a message key or remark is far shorter).
pub const MAX_VALUE_LEN: usize = 4096;
/// Most parameters in one request.
pub const MAX_PARAMS: usize = 64;

/// The decoded parameters of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Parameters from URL-encoded `parts` (query string, then form body): `+` is a space,
    /// a name given twice is refused.
    pub fn decode(parts: &[&[u8]]) -> Result<Self, ApiError> {
        let mut values = BTreeMap::new();
        for part in parts {
            for (name, value) in form_urlencoded::parse(part) {
                if value.len() > MAX_VALUE_LEN {
                    return Err(ApiError::field(
                        &name,
                        format!("longer than {MAX_VALUE_LEN} bytes"),
                    ));
                }
                if values
                    .insert(name.clone().into_owned(), value.into_owned())
                    .is_some()
                {
                    return Err(ApiError::field(&name, "given more than once"));
                }
                if values.len() > MAX_PARAMS {
                    return Err(ApiError::field(
                        "request",
                        format!("more than {MAX_PARAMS} parameters"),
                    ));
                }
            }
        }
        Ok(Self { values })
    }

    /// Parameters from name/value pairs (tests and the CLI).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// Every parameter, sorted by name byte-wise.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The raw value of `name`, if given (possibly empty).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `name` when given and not empty.
    pub fn opt_str(&self, name: &str) -> Option<&str> {
        self.raw(name).filter(|v| !v.is_empty())
    }

    /// The value of required `name`.
    pub fn str(&self, name: &str) -> Result<&str, ApiError> {
        self.opt_str(name)
            .ok_or_else(|| ApiError::field(name, "is required"))
    }

    /// Optional long `name`.
    pub fn opt_long(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.opt_str(name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ApiError::field(name, format!("{v:?} is not an integer")))
            })
            .transpose()
    }

    /// Required long `name`.
    pub fn long(&self, name: &str) -> Result<i64, ApiError> {
        self.opt_long(name)?
            .ok_or_else(|| ApiError::field(name, "is required"))
    }

    /// Optional int `name`.
    pub fn opt_int(&self, name: &str) -> Result<Option<i32>, ApiError> {
        self.opt_long(name)?
            .map(|v| {
                i32::try_from(v).map_err(|_| ApiError::field(name, format!("{v} is out of range")))
            })
            .transpose()
    }

    /// Required int `name`.
    pub fn int(&self, name: &str) -> Result<i32, ApiError> {
        self.opt_int(name)?
            .ok_or_else(|| ApiError::field(name, "is required"))
    }

    /// Optional boolean `name` (`true`/`false` in any case, `1`/`0`).
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.opt_str(name)
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::field(name, format!("{v:?} is not a boolean"))),
            })
            .transpose()
    }

    /// Boolean `name`, `default` when absent.
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        Ok(self.opt_bool(name)?.unwrap_or(default))
    }

    /// Required boolean `name`.
    pub fn bool(&self, name: &str) -> Result<bool, ApiError> {
        self.opt_bool(name)?
            .ok_or_else(|| ApiError::field(name, "is required"))
    }

    /// Optional float `name`.
    pub fn opt_float(&self, name: &str) -> Result<Option<f64>, ApiError> {
        self.opt_str(name)
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| ApiError::field(name, format!("{v:?} is not a number")))
            })
            .transpose()
    }
}

/// The spec's value rules (§5), each an error naming the field.
pub mod rules {
    use super::ApiError;

    /// Letters, digits, `-` and `_` only.
    fn plain(v: &str) -> bool {
        v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// An instance name: 3–64 characters.
    pub fn instance_name(field: &str, v: &str) -> Result<(), ApiError> {
        let n = v.chars().count();
        if !(3..=64).contains(&n) {
            return Err(ApiError::field(
                field,
                format!("{v:?} must be 3 to 64 characters"),
            ));
        }
        Ok(())
    }

    /// A topic name: 3–64 letters, digits, `-`, `_`, not starting with `CID` or `GID`.
    pub fn topic(field: &str, v: &str) -> Result<(), ApiError> {
        if !(3..=64).contains(&v.len()) || !plain(v) {
            return Err(ApiError::field(
                field,
                format!("{v:?} must be 3 to 64 letters, digits, '-' or '_'"),
            ));
        }
        if v.starts_with("CID") || v.starts_with("GID") {
            return Err(ApiError::field(
                field,
                format!("{v:?} starts with CID or GID, which are reserved for group ids"),
            ));
        }
        Ok(())
    }

    /// A new group id: 5–64 characters with the prefix, `GID_`/`GID-`, letters, digits, `-`, `_`.
    pub fn new_group_id(field: &str, v: &str) -> Result<(), ApiError> {
        group_id(field, v)?;
        if !(v.starts_with("GID_") || v.starts_with("GID-")) {
            return Err(ApiError::field(
                field,
                format!("{v:?} must start with GID_ or GID-"),
            ));
        }
        Ok(())
    }

    /// A group id that may already exist: also legacy `CID_`/`CID-`/`PID_`/`PID-` ids.
    pub fn group_id(field: &str, v: &str) -> Result<(), ApiError> {
        let prefixed = ["GID_", "GID-", "CID_", "CID-", "PID_", "PID-"]
            .iter()
            .any(|p| v.starts_with(p));
        if !(5..=64).contains(&v.len()) || !plain(v) || !prefixed {
            return Err(ApiError::field(
                field,
                format!(
                    "{v:?} must be 5 to 64 letters, digits, '-' or '_' starting with GID_ or GID-"
                ),
            ));
        }
        Ok(())
    }

    /// One of `allowed`.
    pub fn one_of(field: &str, v: i64, allowed: &[i64]) -> Result<(), ApiError> {
        if allowed.contains(&v) {
            Ok(())
        } else {
            Err(ApiError::field(
                field,
                format!("{v} is not one of {allowed:?}"),
            ))
        }
    }

    /// Within `min..=max`.
    pub fn within(field: &str, v: i64, min: i64, max: i64) -> Result<(), ApiError> {
        if (min..=max).contains(&v) {
            Ok(())
        } else {
            Err(ApiError::field(
                field,
                format!("{v} is not within {min} to {max}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_body_decode_with_plus_as_space_and_no_repeats() {
        let p = Params::decode(&[b"a=1+2&b=%2B%3D", b"c="]).unwrap();
        assert_eq!(p.raw("a"), Some("1 2"));
        assert_eq!(p.raw("b"), Some("+="));
        assert_eq!(p.raw("c"), Some(""));
        assert_eq!(p.opt_str("c"), None);
        let twice = Params::decode(&[b"a=1", b"a=2"]).unwrap_err();
        assert_eq!(twice.detail, "a: given more than once");
    }

    #[test]
    fn typed_values_name_the_field_when_wrong() {
        let p = Params::from_pairs([("n", "x"), ("b", "TRUE"), ("z", "0"), ("i", "99999999999")]);
        assert!(p.long("n").unwrap_err().detail.starts_with("n: "));
        assert!(p.bool("b").unwrap());
        assert!(!p.bool("z").unwrap());
        assert!(p.int("i").unwrap_err().detail.contains("out of range"));
        assert_eq!(p.str("missing").unwrap_err().detail, "missing: is required");
        assert!(p.bool_or("missing", true).unwrap());
    }

    #[test]
    fn names_follow_section_5() {
        assert!(rules::topic("topic", "ORDERS_1").is_ok());
        assert!(rules::topic("topic", "GID_X").is_err());
        assert!(rules::topic("topic", "ab").is_err());
        assert!(rules::topic("topic", "a.b.c").is_err());
        assert!(rules::topic("topic", &"a".repeat(65)).is_err());
        assert!(rules::new_group_id("groupId", "GID_A").is_ok());
        assert!(
            rules::new_group_id("groupId", "GID_").is_err(),
            "5 with prefix"
        );
        assert!(rules::new_group_id("groupId", "CID_LEGACY").is_err());
        assert!(rules::group_id("groupId", "CID_LEGACY").is_ok());
        assert!(rules::instance_name("instanceName", "ab").is_err());
        assert!(rules::one_of("perm", 3, &[2, 4, 6]).is_err());
    }
}
