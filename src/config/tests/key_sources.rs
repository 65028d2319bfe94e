//! Where the institutions' keys come from: inline, a variable, a file.

use super::*;
use secrecy::ExposeSecret;

#[test]
fn an_environment_key_source_replaces_the_files() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("k");
    std::fs::write(&path, "from-file\n").expect("file written");
    let c = load(
        DEFAULT_TOML,
        &[(
            "H5PAY__INSTITUTIONS__0__KEY_FILE",
            &path.display().to_string(),
        )],
    )
    .expect("display");
    let key = c
        .institutions
        .key("60000001")
        .map(|k| k.expose_secret().to_owned());
    assert_eq!(key.as_deref(), Some("from-file"));
}

#[test]
fn inline_only_refuses_key_env_and_key_file_before_reading_them() {
    let inline = |text: &str| {
        Config::from_parts_with(text, Vec::new(), Source::BuiltIn, KeySources::InlineOnly)
    };
    assert!(inline(MIN).is_ok());
    let e = inline("[[institutions]]\ninst_no = \"1\"\nkey_env = \"H5PAY_UNSET_VAR_X\"\n")
        .err()
        .map(|e| e.key);
    assert_eq!(e.as_deref(), Some("institutions[0].key_env"));
    let e = inline(&format!(
        "{MIN}[[institutions]]\ninst_no = \"2\"\nkey_file = \"/nonexistent/k\"\n\
         [worker]\ndefault_inst_no = \"60000001\"\n"
    ))
    .err();
    let e = e.expect("refused");
    assert_eq!(e.key, "institutions[1].key_file");
    assert!(e.message.contains("/nonexistent/k"), "{e}");
    assert!(!e.message.contains("cannot read"), "never read: {e}");
}

#[test]
fn key_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("key");
    std::fs::write(&path, "file-key\n").expect("file written");
    let text = format!(
        "[[institutions]]\ninst_no = \"9\"\nkey_file = {:?}\n",
        path.display().to_string()
    );
    let c = load(&text, &[]).expect("settings load");
    let key = c
        .institutions
        .key("9")
        .map(|k| k.expose_secret().to_owned());
    assert_eq!(key.as_deref(), Some("file-key"));
}

#[test]
fn the_default_institution_is_named_once_there_are_two_and_never_by_order() {
    let two = |first: &str, second: &str| {
        format!(
            "[worker]\ndefault_inst_no = \"60000002\"\n\
             [[institutions]]\ninst_no = \"{first}\"\nkey = \"k1\"\n\
             [[institutions]]\ninst_no = \"{second}\"\nkey = \"k2\"\n"
        )
    };
    for text in [two("60000001", "60000002"), two("60000002", "60000001")] {
        let c = load(&text, &[]).expect("settings load");
        assert_eq!(c.institutions.default_inst_no(), "60000002");
    }
    let one = load(MIN, &[]).expect("settings load");
    assert_eq!(one.institutions.default_inst_no(), "60000001");
}
