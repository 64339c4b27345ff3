//! `crds/` must be exactly what the Rust types generate: the CRDs users install are
//! never edited by hand and never drift from the code.

use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn crds_dir_matches_the_generated_crds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let on_disk: BTreeMap<String, String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| e.expect("readable crds/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                std::fs::read_to_string(&p).expect("readable CRD file"),
            )
        })
        .collect();
    let generated: BTreeMap<String, String> = mq_operator::crd::crd_files()
        .expect("CRDs serialize")
        .into_iter()
        .collect();
    assert_eq!(
        on_disk.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "crds/ holds other files than the code generates; run `make crds`"
    );
    for (name, yaml) in &generated {
        assert!(
            on_disk[name] == *yaml,
            "crds/{name} differs from what operator/src/crd generates; run `make crds`"
        );
    }
}
