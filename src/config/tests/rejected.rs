//! Configurations that must be refused: each names the bad key in dotted
//! form, in one line, and never shows a secret.

use super::*;

type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);

fn each_names_its_key(cases: Vec<Case<'_>>) {
    for (text, env, key) in cases {
        let e = error_of(&text, &env);
        assert_eq!(e.key, key, "{text:?} {env:?} -> {e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

#[test]
fn bad_amqp_settings_name_the_key_in_dotted_form() {
    each_names_its_key(vec![
        (
            format!("[amqp]\nurl = \"http://x\"\n{MIN}"),
            vec![],
            "amqp.url",
        ),
        (
            format!("[amqp]\nurl = \"not a url\"\n{MIN}"),
            vec![],
            "amqp.url",
        ),
        (
            format!("[amqp]\nprefetch = 0\n{MIN}"),
            vec![],
            "amqp.prefetch",
        ),
        (
            format!("[amqp]\nprefetch = 70000\n{MIN}"),
            vec![],
            "amqp.prefetch",
        ),
        (
            format!("[amqp]\nqueue_type = \"stream\"\n{MIN}"),
            vec![],
            "amqp.queue_type",
        ),
        (format!("[amqp]\nbogus = 1\n{MIN}"), vec![], "amqp.bogus"),
        (
            MIN.to_owned(),
            vec![("H5PAY__AMQP__PREFECH", "1")],
            "amqp.prefech",
        ),
        (
            MIN.to_owned(),
            vec![("H5PAY__AMQP__PREFETCH", "many")],
            "amqp.prefetch",
        ),
        (
            format!("[amqp]\npublish_retry_ms = 0\n{MIN}"),
            vec![],
            "amqp.publish_retry_ms",
        ),
        (
            format!("[amqp]\nurls = [\"amqp://a/%2f\", \"http://b/\"]\n{MIN}"),
            vec![],
            "amqp.urls[1]",
        ),
        (
            format!("[amqp]\nurls = [\"amqp://\"]\n{MIN}"),
            vec![],
            "amqp.urls[0]",
        ),
        (
            MIN.to_owned(),
            vec![("H5PAY__AMQP__URLS", "amqp://a/%2f,amqp://b/%2f,nope")],
            "amqp.urls[2]",
        ),
        (
            format!("[amqp]\nurls = \"amqp://a/%2f\"\n{MIN}"),
            vec![],
            "amqp.urls",
        ),
    ]);
}

#[test]
fn bad_redis_settings_name_the_key_in_dotted_form() {
    each_names_its_key(vec![
        (
            format!("[redis]\nurl = \"mysql://x\"\n{MIN}"),
            vec![],
            "redis.url",
        ),
        (
            format!("[redis]\nlease_ms = \"long\"\n{MIN}"),
            vec![],
            "redis.lease_ms",
        ),
        (
            format!("[redis]\nlease_ms = 4999\n{MIN}"),
            vec![],
            "redis.lease_ms",
        ),
        (
            format!("[redis]\nretention_secs = 3599\n{MIN}"),
            vec![],
            "redis.retention_secs",
        ),
        (
            format!("[redis]\nretention_secs = 7200\n[retry]\nmax_elapsed_ms = 3600000\n{MIN}"),
            vec![],
            "redis.retention_secs",
        ),
        (
            format!("[redis]\ncluster = true\nurls = [\"mysql://x\"]\n{MIN}"),
            vec![],
            "redis.urls[0]",
        ),
        (
            format!("[redis]\nurls = [\"redis://r-1:6379\"]\n{MIN}"),
            vec![],
            "redis.urls",
        ),
        (
            format!("[redis]\nwait_replicas = 17\n{MIN}"),
            vec![],
            "redis.wait_replicas",
        ),
        (
            format!("[redis]\ncluster = true\nkey_prefix = \"{{h5pay}}:intent\"\n{MIN}"),
            vec![],
            "redis.key_prefix",
        ),
        (
            format!("[redis]\nwait_replicas = -1\n{MIN}"),
            vec![],
            "redis.wait_replicas",
        ),
    ]);
}

#[test]
fn bad_institutions_name_the_key_in_dotted_form() {
    each_names_its_key(vec![
        ("".to_owned(), vec![], "institutions"),
        (
            "[[institutions]]\ninst_no = \"60000001\"\n".to_owned(),
            vec![],
            "institutions[0].key",
        ),
        (
            "[[institutions]]\ninst_no = \"6 1\"\nkey = \"k\"\n".to_owned(),
            vec![],
            "institutions[0].inst_no",
        ),
        (
            format!("{MIN}key_env = \"X\"\n"),
            vec![],
            "institutions[0].key",
        ),
        (
            format!("{MIN}[[institutions]]\ninst_no = \"60000001\"\nkey = \"k2\"\n"),
            vec![],
            "institutions[1].inst_no",
        ),
        (
            "[[institutions]]\ninst_no = \"1\"\nkey_file = \"/nonexistent/key\"\n".to_owned(),
            vec![],
            "institutions[0].key_file",
        ),
        (
            MIN.to_owned(),
            vec![("H5PAY__INSTITUTIONS__5__KEY", "x")],
            "institutions[5].key",
        ),
        (
            format!("{MIN}[[institutions]]\ninst_no = \"60000002\"\nkey = \"k2\"\n"),
            vec![],
            "worker.default_inst_no",
        ),
        (
            format!("[worker]\ndefault_inst_no = \"99\"\n{MIN}"),
            vec![],
            "worker.default_inst_no",
        ),
    ]);
}

#[test]
fn bad_other_settings_name_the_key_in_dotted_form() {
    each_names_its_key(vec![
        (
            format!("[otel]\nendpoint = \"grpc://collector:4317\"\n{MIN}"),
            vec![],
            "otel.endpoint",
        ),
        (
            format!("[otel]\nsample_ratio = 1.5\n{MIN}"),
            vec![],
            "otel.sample_ratio",
        ),
        (
            MIN.to_string(),
            vec![("H5PAY__OTEL__SAMPLE_RATIO", "-0.1")],
            "otel.sample_ratio",
        ),
        (
            format!("[otel]\nservice_name = \"\"\n{MIN}"),
            vec![],
            "otel.service_name",
        ),
        (format!("[nope]\nx = 1\n{MIN}"), vec![], "nope"),
        (
            format!("[gateway]\nurl = \"ftp://x/y\"\n{MIN}"),
            vec![],
            "gateway.url",
        ),
        (
            format!("[retry]\nmultiplier = 0.5\n{MIN}"),
            vec![],
            "retry.multiplier",
        ),
        (
            format!("[retry]\nmax_attempts = 0\n{MIN}"),
            vec![],
            "retry.max_attempts",
        ),
        (
            format!("[worker]\ntimezone_offset = \"CST\"\n{MIN}"),
            vec![],
            "worker.timezone_offset",
        ),
        (
            format!("[worker]\nduplicates = \"ignore\"\n{MIN}"),
            vec![],
            "worker.duplicates",
        ),
        (
            format!("[admin]\nlisten = \"nowhere\"\n{MIN}"),
            vec![],
            "admin.listen",
        ),
        (
            format!("[log]\nformat = \"xml\"\n{MIN}"),
            vec![],
            "log.format",
        ),
        ("[amqp\nurl=1".to_owned(), vec![], "config"),
        (
            format!("[gateway]\nquery_url = \"ftp://x/y\"\n{MIN}"),
            vec![],
            "gateway.query_url",
        ),
        (
            format!("[gateway]\nclose_url = \"closeorder\"\n{MIN}"),
            vec![],
            "gateway.close_url",
        ),
        (
            format!("[reconcile]\nconcurrency = 0\n{MIN}"),
            vec![],
            "reconcile.concurrency",
        ),
        (
            format!("[reconcile]\nconcurrency = 65536\n{MIN}"),
            vec![],
            "reconcile.concurrency",
        ),
        (
            MIN.to_owned(),
            vec![("H5PAY__RECONCILE__SCHEDULE_SHARDS", "0")],
            "reconcile.schedule_shards",
        ),
    ]);
}

#[test]
fn errors_and_debug_never_show_a_key() {
    let secret = "k-secret-1";
    let texts = [
        "[[institutions]]\ninst_no = \"60000001\"\nkey = 12345\n".to_owned(),
        format!("[[institutions]]\ninst_no = \"60000001\"\nkey = \"{secret}\n"),
        format!("[[institutions]]\ninst_no = \"6 0\"\nkey = \"{secret}\"\n"),
        format!("[[institutions]]\ninst_no = \"60000001\"\nkey = \"{secret}\"\nkey_env = \"A\"\n"),
    ];
    for t in &texts {
        let e = error_of(t, &[]);
        assert!(
            !e.to_string().contains(secret) && !e.to_string().contains("12345"),
            "{e}"
        );
    }
    let c = load(MIN, &[]).expect("settings load");
    let debug = format!("{c:?}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(!debug.contains("guest:guest"), "password in {debug}");
    // A URL list's password stays out of its errors too.
    for (text, env) in [
        (
            format!("[amqp]\nurls = \"amqp://u:{secret}@a/%2f\"\n{MIN}"),
            vec![],
        ),
        (
            format!("[redis]\ncluster = true\nurls = [\"redis://u:{secret}@a:6379\", 7]\n{MIN}"),
            vec![],
        ),
        (
            format!(
                "[amqp]\nurls = [\"amqp://u:{secret}@a/%2f\", \"http://u:{secret}@b/\"]\n{MIN}"
            ),
            vec![],
        ),
        (
            MIN.to_owned(),
            vec![(
                "H5PAY__AMQP__URLS",
                format!("amqp://u:{secret}@a/%2f,amqp://u:{secret}@b:x/"),
            )],
        ),
        (
            format!(
                "[redis]\ncluster = true\nurls = [\"redis://u:{secret}@a:6379\", \"https://u:{secret}@b/\"]\n{MIN}"
            ),
            vec![],
        ),
    ] {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let e = error_of(&text, &env);
        assert!(e.key.contains(".urls"), "{e}");
        assert!(!e.to_string().contains(secret), "{e}");
    }
}

#[test]
fn insecure_gateway_endpoints_are_plain_http_off_this_host() {
    let g = |url: &str, query: &str, close: &str| GatewaySettings {
        url: url.into(),
        query_url: query.into(),
        close_url: close.into(),
        ..GatewaySettings::default()
    };
    let keys = |g: &GatewaySettings| -> Vec<&'static str> {
        g.insecure_endpoints().into_iter().map(|(k, _)| k).collect()
    };
    for local in [
        "http://127.0.0.1:8090/api/openpay/v3/h5pay",
        "http://127.9.8.7/v3/h5pay",
        "http://[::1]:8090/v3/h5pay",
        "http://localhost:8090/v3/h5pay",
        "http://LOCALHOST/v3/h5pay",
        "https://gw.example.com/v3/h5pay",
    ] {
        assert!(keys(&g(local, "", "")).is_empty(), "{local}");
    }
    for remote in [
        "http://gateway.invalid/api/openpay/v3/h5pay",
        "http://10.0.0.1/v3/h5pay",
        "http://128.0.0.1/v3/h5pay",
        "http://[::2]/v3/h5pay",
        "http://localhost.example.com/v3/h5pay",
    ] {
        assert_eq!(keys(&g(remote, "", "")), ["gateway.url"], "{remote}");
    }
    let local = "http://127.0.0.1:8090/v3/h5pay";
    assert_eq!(
        keys(&g(
            local,
            "http://gw.example/v3/queryorder",
            "https://gw.example/v3/closeorder"
        )),
        ["gateway.query_url"]
    );
    assert_eq!(
        keys(&g(local, "", "http://gw.example/v3/closeorder")),
        ["gateway.close_url"]
    );
}
