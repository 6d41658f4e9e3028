//! Rule file loading, validation errors, matchers and templates.

use std::{collections::HashSet, time::Duration};

use sentra_alerts::{
    Error, Matcher, RuleKind, builtin_wireguard_rules, parse_rules,
    template::{Context, Template},
};

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    v.sort();
    v
}

const GOOD: &str = r#"
[[rule]]
name = "HighRtt"
kind = "threshold"
metric = "ping_rtt_seconds"
matchers = ['interface=~"wg[0-9]+"', 'site!="lab"']
op = ">"
value = 0.5
for = "1m"
keep_firing_for = "30s"
severity = "critical"
labels = { team = "net" }
summary = "RTT {{ $value }} on {{ $labels.interface }}"

[[rule]]
name = "NoScrape"
kind = "absent"
metric = "up"
after = "10m"

[[rule]]
name = "Stale"
kind = "wg_handshake_stale"
"#;

#[test]
fn loads_a_valid_file_with_defaults() {
    let (rules, warnings) = parse_rules(GOOD, None).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].for_, Duration::from_secs(60));
    assert_eq!(rules[0].keep_firing_for, Duration::from_secs(30));
    assert_eq!(rules[0].matchers.len(), 2);
    assert_eq!(
        rules[1].kind,
        RuleKind::Absent {
            metric: "up".into(),
            after: Duration::from_secs(600)
        }
    );
    assert_eq!(
        rules[2].kind,
        RuleKind::HandshakeStale {
            max_age: Duration::from_secs(180)
        }
    );
}

#[test]
fn unknown_metric_is_a_warning_with_line_and_rule() {
    let known: HashSet<String> = ["ping_rtt_seconds".to_owned()].into();
    let (rules, warnings) = parse_rules(GOOD, Some(&known)).unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = warnings[0].to_string();
    assert!(
        w.contains("line 15") && w.contains("NoScrape") && w.contains("\"up\""),
        "{w}"
    );
}

#[test]
fn toml_syntax_error_has_a_line() {
    let e = parse_rules("[[rule]]\nname = \"x\"\nkind = \n", None).unwrap_err();
    assert!(matches!(e, Error::Syntax(_)), "{e:?}");
    assert!(e.to_string().contains("line 3"), "{e}");
}

#[test]
fn misspelt_field_is_rejected_with_its_line() {
    let src =
        "[[rule]]\nname = \"x\"\nkind = \"threshold\"\nmetric = \"m\"\nop = \">\"\ntreshold = 3\n";
    let e = parse_rules(src, None).unwrap_err().to_string();
    assert!(e.contains("treshold") && e.contains("line 6"), "{e}");
}

#[test]
fn every_invalid_rule_is_listed_with_line_and_name() {
    let src = r#"
[[rule]]
name = "A"
kind = "treshold"

[[rule]]
name = "B"
kind = "threshold"
metric = "m"
value = 1.0

[[rule]]
name = "C"
kind = "absent"
metric = "bad-metric"
after = "ten minutes"
max_age = "1m"

[[rule]]
name = "D"
kind = "threshold"
metric = "m"
op = ">"
value = 1.0
matchers = ['x=~"("', 'y = unquoted', '__x="1"']
summary = "{{ $labels.peer "

[[rule]]
name = "A"
kind = "agent_offline"
"#;
    let Err(Error::Invalid(problems)) = parse_rules(src, None) else {
        panic!("expected Invalid");
    };
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let has = |needle: &[&str]| {
        assert!(
            text.iter().any(|t| needle.iter().all(|n| t.contains(n))),
            "no problem containing {needle:?} in {text:#?}"
        );
    };
    has(&["line 2", "\"A\"", "unknown kind \"treshold\""]);
    has(&["line 6", "\"B\"", "`op` is required"]);
    has(&["line 12", "\"C\"", "not a valid metric name"]);
    has(&["line 12", "\"C\"", "\"ten minutes\" is not a duration"]);
    has(&[
        "line 12",
        "\"C\"",
        "`max_age` does not apply to kind \"absent\"",
    ]);
    has(&["line 19", "\"D\"", "invalid regex"]);
    has(&["line 19", "\"D\"", "double quotes"]);
    has(&["line 19", "\"D\"", "invalid label name \"__x\""]);
    has(&["line 19", "\"D\"", "`summary`", "never closed"]);
    has(&["line 28", "\"A\"", "duplicate rule name"]);
    assert_eq!(problems.len(), 10, "{text:#?}");
}

#[test]
fn matchers_follow_prometheus_semantics() {
    let l = labels(&[("interface", "wg0"), ("site", "par")]);
    let m = |s: &str| Matcher::parse(s).unwrap().matches(&l);
    assert!(m(r#"interface="wg0""#));
    assert!(!m(r#"interface!="wg0""#));
    assert!(m(r#"interface=~"wg[0-9]""#));
    // anchored: a partial match is no match
    assert!(!m(r#"interface=~"wg""#));
    assert!(m(r#"interface!~"eth.*""#));
    // an absent label is the empty string
    assert!(m(r#"missing="""#));
    assert!(m(r#"missing!="x""#));
    assert!(m(r#"missing=~".*""#));
    assert!(!m(r#"missing=~".+""#));
    let q = labels(&[("v", "a\"b\\c")]);
    assert!(Matcher::parse(r#"v="a\"b\\c""#).unwrap().matches(&q));
    for bad in [
        "",
        "interface",
        "interface==",
        "1a=\"x\"",
        "a=\"x",
        "a=\"\\q\"",
        "a=~\"[\"",
    ] {
        let e = Matcher::parse(bad).unwrap_err();
        assert!(matches!(e, Error::Matcher { .. }), "{bad}: {e:?}");
    }
}

fn render(t: &str) -> String {
    let l = labels(&[("peer", "K="), ("interface", "wg0")]);
    Template::parse(t)
        .unwrap()
        .render(&Context::new(&l, 181.5, "Stale", "critical"))
}

#[test]
fn templates_render_variables() {
    assert_eq!(
        render(
            "{{$rule}} [{{ $severity }}] peer {{ $labels.peer }} on {{  $labels.interface}}: {{ $value }} s"
        ),
        "Stale [critical] peer K= on wg0: 181.5 s"
    );
    assert_eq!(render("no tags"), "no tags");
    assert_eq!(render("{{ $labels.absent }}|"), "|");
    assert_eq!(render(r#"{{ "{" }}{{ "{" }} x {{ "}" }}"#), "{{ x }");
    // label values are data, never re-interpreted as template syntax
    let l = labels(&[("peer", "{{ $value }}")]);
    let out = Template::parse("{{ $labels.peer }}")
        .unwrap()
        .render(&Context::new(&l, 1.0, "r", "info"));
    assert_eq!(out, "{{ $value }}");
}

#[test]
fn hostile_templates_are_clear_errors() {
    let cases = [
        ("a {{ $value", 2, "never closed"),
        ("a }} b", 2, "without a matching"),
        ("{{ }}", 0, "empty tag"),
        ("x {{ $env.HOME }}", 2, "unknown variable \"$env.HOME\""),
        ("{{ $labels.a-b }}", 0, "not a valid label name"),
        ("{{ $labels. }}", 0, "not a valid label name"),
        ("{{ {{ $value }} }}", 3, "inside a tag"),
        ("{{ printf \"%s\" $value }}", 0, "unknown variable"),
        ("{{ $value }} }}", 13, "without a matching"),
    ];
    for (src, offset, msg) in cases {
        match Template::parse(src) {
            Err(Error::Template { offset: o, message }) => {
                assert_eq!(o, offset, "{src}: {message}");
                assert!(message.contains(msg), "{src}: {message}");
            }
            other => panic!("{src}: expected a template error, got {other:?}"),
        }
    }
}

#[test]
fn builtin_wireguard_rules_load() {
    let rules = builtin_wireguard_rules();
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "WgHandshakeStale",
            "WgEndpointChanged",
            "WgTransferStalled",
            "WgInterfaceGone",
            "AgentOffline"
        ]
    );
}
