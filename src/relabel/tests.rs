//! Table tests: Prometheus's own `TestRelabel` and `TestRelabelValidate` cases (re-stated),
//! then the corners of the `labels.Builder` model.

use super::*;

#[derive(Default, Clone)]
struct R {
    src: Option<&'static [&'static str]>,
    sep: Option<&'static str>,
    regex: Option<&'static str>,
    modulus: Option<u64>,
    target: Option<&'static str>,
    repl: Option<&'static str>,
    action: Option<&'static str>,
}

impl R {
    fn spec(&self) -> RuleSpec {
        RuleSpec {
            source_labels: self.src.map(|s| s.iter().map(|x| x.to_string()).collect()),
            separator: self.sep.map(str::to_string),
            regex: self.regex.map(str::to_string),
            modulus: self.modulus,
            target_label: self.target.map(str::to_string),
            replacement: self.repl.map(str::to_string),
            action: self.action.map(str::to_string),
        }
    }
}

fn run(input: &[(&str, &str)], rules: &[R]) -> Option<Vec<(String, String)>> {
    let sorted = run_order(input, rules, false);
    // Labels out of order (a sender that does not sort) take the lookup path: same answer.
    let reversed = run_order(input, rules, true).map(|mut v| {
        v.sort();
        v
    });
    assert_eq!(sorted, reversed, "sorted and unsorted input disagree");
    sorted
}

fn run_order(input: &[(&str, &str)], rules: &[R], reverse: bool) -> Option<Vec<(String, String)>> {
    let rules = RuleSet::new(
        rules
            .iter()
            .map(|r| Rule::compile(&r.spec()).unwrap_or_else(|e| panic!("compile: {e}")))
            .collect(),
    );
    let mut sorted: Vec<(&[u8], &[u8])> = input
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    sorted.sort();
    if reverse {
        sorted.reverse();
    }
    let mut s = Scratch::default();
    match process(&rules, sorted.iter().copied(), &mut s) {
        Relabeled::Dropped => None,
        Relabeled::Unchanged => Some(sorted.iter().map(|(n, v)| (str_of(n), str_of(v))).collect()),
        Relabeled::Changed(out) => {
            assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "sorted, unique");
            assert!(out.iter().all(|(_, v)| !v.is_empty()), "no empty values");
            let mut before: Vec<(Vec<u8>, Vec<u8>)> = sorted
                .iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect();
            before.sort();
            // (Unsorted input that keeps its labels comes out sorted: a change of bytes.)
            if !reverse {
                assert_ne!(out, before, "Changed must differ");
            }
            Some(out.iter().map(|(n, v)| (str_of(n), str_of(v))).collect())
        }
    }
}

fn str_of(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn set(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    v.sort();
    Some(v)
}

fn act(a: &'static str) -> Option<&'static str> {
    Some(a)
}

type Labels = Option<Vec<(String, String)>>;
type Case<'a> = (&'a [(&'a str, &'a str)], Vec<R>, Labels);

#[test]
fn prometheus_relabel_cases() {
    let abc = [("a", "foo"), ("b", "bar"), ("c", "baz")];
    let cases: Vec<Case> = vec![
        (
            &abc,
            vec![R {
                src: Some(&["a"]),
                regex: Some("f(.*)"),
                target: Some("d"),
                repl: Some("ch${1}-ch${1}"),
                ..R::default()
            }],
            set(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")]),
        ),
        (
            &abc,
            vec![
                R {
                    src: Some(&["a", "b"]),
                    regex: Some("f(.*);(.*)r"),
                    target: Some("a"),
                    repl: Some("b${1}${2}m"),
                    ..R::default()
                },
                R {
                    src: Some(&["c", "a"]),
                    regex: Some("(b).*b(.*)ba(.*)"),
                    target: Some("d"),
                    repl: Some("$1$2$2$3"),
                    ..R::default()
                },
            ],
            set(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")]),
        ),
        (
            &[("a", "foo")],
            vec![
                R {
                    src: Some(&["a"]),
                    regex: Some(".*o.*"),
                    action: act("drop"),
                    ..R::default()
                },
                R {
                    src: Some(&["a"]),
                    regex: Some("f(.*)"),
                    target: Some("d"),
                    repl: Some("ch$1-ch$1"),
                    ..R::default()
                },
            ],
            None,
        ),
        (
            &[("a", "foo"), ("b", "bar")],
            vec![R {
                src: Some(&["a"]),
                regex: Some(".*o.*"),
                action: act("drop"),
                ..R::default()
            }],
            None,
        ),
        (
            &[("a", "abc")],
            vec![R {
                src: Some(&["a"]),
                regex: Some(".*(b).*"),
                target: Some("d"),
                ..R::default()
            }],
            set(&[("a", "abc"), ("d", "b")]),
        ),
        (
            &[("a", "foo")],
            vec![R {
                src: Some(&["a"]),
                regex: Some("no-match"),
                action: act("drop"),
                ..R::default()
            }],
            set(&[("a", "foo")]),
        ),
        // Anchored: "f|o" does not match "foo".
        (
            &[("a", "foo")],
            vec![R {
                src: Some(&["a"]),
                regex: Some("f|o"),
                action: act("drop"),
                ..R::default()
            }],
            set(&[("a", "foo")]),
        ),
        (
            &[("a", "foo")],
            vec![R {
                src: Some(&["a"]),
                regex: Some("no-match"),
                action: act("keep"),
                ..R::default()
            }],
            None,
        ),
        (
            &[("a", "foo")],
            vec![R {
                src: Some(&["a"]),
                regex: Some("f.*"),
                action: act("keep"),
                ..R::default()
            }],
            set(&[("a", "foo")]),
        ),
        // No replacement if there is no match.
        (
            &[("a", "boo")],
            vec![R {
                src: Some(&["a"]),
                regex: Some("f"),
                target: Some("b"),
                repl: Some("bar"),
                ..R::default()
            }],
            set(&[("a", "boo")]),
        ),
        (
            &abc,
            vec![R {
                src: Some(&["c"]),
                target: Some("d"),
                action: act("hashmod"),
                modulus: Some(1000),
                ..R::default()
            }],
            set(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]),
        ),
        (
            &[("a", "foo\nbar")],
            vec![R {
                src: Some(&["a"]),
                target: Some("b"),
                action: act("hashmod"),
                modulus: Some(1000),
                ..R::default()
            }],
            set(&[("a", "foo\nbar"), ("b", "734")]),
        ),
        (
            &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            vec![R {
                regex: Some("(b.*)"),
                repl: Some("bar_${1}"),
                action: act("labelmap"),
                ..R::default()
            }],
            set(&[
                ("a", "foo"),
                ("b1", "bar"),
                ("b2", "baz"),
                ("bar_b1", "bar"),
                ("bar_b2", "baz"),
            ]),
        ),
        (
            &[
                ("a", "foo"),
                ("__meta_my_bar", "aaa"),
                ("__meta_my_baz", "bbb"),
                ("__meta_other", "ccc"),
            ],
            vec![R {
                regex: Some("__meta_(my.*)"),
                repl: Some("${1}"),
                action: act("labelmap"),
                ..R::default()
            }],
            set(&[
                ("a", "foo"),
                ("__meta_my_bar", "aaa"),
                ("__meta_my_baz", "bbb"),
                ("__meta_other", "ccc"),
                ("my_bar", "aaa"),
                ("my_baz", "bbb"),
            ]),
        ),
        (
            &[("a", "some-name-value")],
            vec![R {
                src: Some(&["a"]),
                regex: Some("some-([^-]+)-([^,]+)"),
                repl: Some("${2}"),
                target: Some("${1}"),
                ..R::default()
            }],
            set(&[("a", "some-name-value"), ("name", "value")]),
        ),
        // Replacement expands to nothing: the (absent) target is deleted, nothing changes.
        (
            &[("a", "some-name-value")],
            vec![R {
                src: Some(&["a"]),
                regex: Some("some-([^-]+)-([^,]+)"),
                repl: Some("${3}"),
                target: Some("${1}"),
                ..R::default()
            }],
            set(&[("a", "some-name-value")]),
        ),
        // Target expands to an invalid name (empty, or starting with a digit): skipped.
        (
            &[("a", "some-name-0")],
            vec![
                R {
                    src: Some(&["a"]),
                    regex: Some("some-([^-]+)-([^,]+)"),
                    repl: Some("${1}"),
                    target: Some("${3}"),
                    ..R::default()
                },
                R {
                    src: Some(&["a"]),
                    regex: Some("some-([^-]+)(-[^,]+)"),
                    repl: Some("${1}"),
                    target: Some("${3}"),
                    ..R::default()
                },
                R {
                    src: Some(&["a"]),
                    regex: Some("some-([^-]+)-([^,]+)"),
                    repl: Some("${1}"),
                    target: Some("${2}"),
                    ..R::default()
                },
            ],
            set(&[("a", "some-name-0")]),
        ),
        (
            &[("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar")],
            vec![
                R {
                    src: Some(&["__meta_sd_tags"]),
                    regex: Some("(?:.+,|^)path:(/[^,]+).*"),
                    repl: Some("${1}"),
                    target: Some("__metrics_path__"),
                    ..R::default()
                },
                R {
                    src: Some(&["__meta_sd_tags"]),
                    regex: Some("(?:.+,|^)job:([^,]+).*"),
                    repl: Some("${1}"),
                    target: Some("job"),
                    ..R::default()
                },
                R {
                    src: Some(&["__meta_sd_tags"]),
                    regex: Some("(?:.+,|^)label:([^=]+)=([^,]+).*"),
                    repl: Some("${2}"),
                    target: Some("${1}"),
                    ..R::default()
                },
            ],
            set(&[
                ("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar"),
                ("__metrics_path__", "/secret"),
                ("job", "some-job"),
                ("foo", "bar"),
            ]),
        ),
        // prometheus/prometheus#12283: a dropped label set again is seen by later rules.
        (
            &[
                ("__meta_kubernetes_pod_container_port_name", "foo"),
                ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091"),
            ],
            vec![
                R {
                    regex: Some("^__meta_kubernetes_pod_container_port_name$"),
                    action: act("labeldrop"),
                    ..R::default()
                },
                R {
                    src: Some(&["__meta_kubernetes_pod_annotation_XXX_metrics_port"]),
                    regex: Some("(.+)"),
                    repl: Some("metrics"),
                    target: Some("__meta_kubernetes_pod_container_port_name"),
                    ..R::default()
                },
                R {
                    src: Some(&["__meta_kubernetes_pod_container_port_name"]),
                    regex: Some("^metrics$"),
                    action: act("keep"),
                    ..R::default()
                },
            ],
            set(&[
                ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091"),
                ("__meta_kubernetes_pod_container_port_name", "metrics"),
            ]),
        ),
        (
            &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            vec![R {
                regex: Some("(b.*)"),
                action: act("labelkeep"),
                ..R::default()
            }],
            set(&[("b1", "bar"), ("b2", "baz")]),
        ),
        (
            &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            vec![R {
                regex: Some("(b.*)"),
                action: act("labeldrop"),
                ..R::default()
            }],
            set(&[("a", "foo")]),
        ),
        (
            &[("foo", "bAr123Foo")],
            vec![
                R {
                    src: Some(&["foo"]),
                    action: act("uppercase"),
                    target: Some("foo_uppercase"),
                    ..R::default()
                },
                R {
                    src: Some(&["foo"]),
                    action: act("lowercase"),
                    target: Some("foo_lowercase"),
                    ..R::default()
                },
            ],
            set(&[
                ("foo", "bAr123Foo"),
                ("foo_lowercase", "bar123foo"),
                ("foo_uppercase", "BAR123FOO"),
            ]),
        ),
    ];
    let ports = [
        ("__tmp_port", "1234"),
        ("__port1", "1234"),
        ("__port2", "5678"),
    ];
    let eq = |a: &'static str, t: &'static str| {
        vec![R {
            src: Some(&["__tmp_port"]),
            action: act(a),
            target: Some(t),
            ..R::default()
        }]
    };
    let mut cases = cases;
    cases.push((&ports, eq("keepequal", "__port1"), set(&ports)));
    cases.push((&ports, eq("dropequal", "__port1"), None));
    cases.push((&ports, eq("dropequal", "__port2"), set(&ports)));
    cases.push((&ports, eq("keepequal", "__port2"), None));

    for (i, (input, rules, want)) in cases.iter().enumerate() {
        assert_eq!(&run(input, rules), want, "case {i}");
    }
}

#[test]
fn prometheus_validation_errors() {
    let err = |r: R| Rule::compile(&r.spec()).unwrap_err();
    assert_eq!(
        err(R {
            action: act(""),
            ..R::default()
        }),
        "relabel action cannot be empty"
    );
    assert!(err(R::default()).contains("requires 'target_label' value"));
    assert!(err(R {
        action: act("lowercase"),
        ..R::default()
    })
    .contains("requires 'target_label' value"));
    assert_eq!(
        err(R {
            action: act("lowercase"),
            target: Some("${3}"),
            ..R::default()
        }),
        r#""${3}" is invalid 'target_label' for lowercase action"#
    );
    let tgt = |t: &'static str| R {
        src: Some(&["a"]),
        regex: Some("some-([^-]+)-([^,]+)"),
        repl: Some("${1}"),
        target: Some(t),
        ..R::default()
    };
    assert!(Rule::compile(&tgt("${3}").spec()).is_ok());
    assert_eq!(
        err(tgt("0${3}")),
        r#""0${3}" is invalid 'target_label' for replace action"#
    );
    assert_eq!(
        err(tgt("-${3}")),
        r#""-${3}" is invalid 'target_label' for replace action"#
    );
    assert_eq!(
        err(R {
            action: act("hashmod"),
            target: Some("x"),
            ..R::default()
        }),
        "relabel configuration for hashmod requires non-zero modulus"
    );
    assert_eq!(
        err(R {
            action: act("explode"),
            ..R::default()
        }),
        r#"unknown relabel action "explode""#
    );
    assert!(err(R {
        src: Some(&["a"]),
        regex: Some("(unclosed"),
        target: Some("x"),
        ..R::default()
    })
    .starts_with("invalid regex \"(unclosed\""));
    assert_eq!(
        err(R {
            src: Some(&["a"]),
            action: act("keepequal"),
            target: Some("b"),
            regex: Some("(.*)"),
            ..R::default()
        }),
        "keepequal action requires only 'source_labels' and `target_label`, and no other fields"
    );
    assert_eq!(
        err(R {
            src: Some(&["a"]),
            action: act("labeldrop"),
            ..R::default()
        }),
        "labeldrop action requires only 'regex', and no other fields"
    );
    assert_eq!(
        err(R {
            src: Some(&["a"]),
            action: act("uppercase"),
            target: Some("b"),
            repl: Some("x"),
            ..R::default()
        }),
        "'replacement' can not be set for uppercase action"
    );
    assert_eq!(
        err(R {
            action: act("labelmap"),
            repl: Some("-x"),
            ..R::default()
        }),
        r#""-x" is invalid 'replacement' for labelmap action"#
    );
    assert_eq!(
        err(R {
            src: Some(&["a-b"]),
            target: Some("x"),
            ..R::default()
        }),
        r#""a-b" is not a valid label name"#
    );
    // Action names are case-insensitive.
    assert!(Rule::compile(
        &R {
            regex: Some("x"),
            action: act("LabelDrop"),
            ..R::default()
        }
        .spec()
    )
    .is_ok());
}

#[test]
fn target_template_validity_matches_prometheus() {
    for (s, ok) in [
        ("-label", false),
        ("label", true),
        ("label${1}", true),
        ("${1}label", true),
        ("${1}", true),
        ("${", false),
        ("$", false),
        ("${}", false),
        ("foo${", false),
        ("$1", true),
        ("asd$2asd", true),
        ("-foo${1}bar-", false),
        ("_${1}_", true),
        ("foo${bar}foo", true),
    ] {
        let r = R {
            src: Some(&["a"]),
            target: Some(s),
            ..R::default()
        };
        assert_eq!(Rule::compile(&r.spec()).is_ok(), ok, "{s:?}");
    }
}

#[test]
fn builder_corners() {
    let input = [("__name__", "up"), ("a", "1"), ("b", "2")];
    // Replace writing the value a label already has: unchanged (raw bytes kept).
    assert_eq!(
        run(
            &input,
            &[R {
                src: Some(&["a"]),
                target: Some("a"),
                ..R::default()
            }]
        ),
        set(&input)
    );
    // The default rule on a missing source: val "" → target deleted (absent: no change).
    assert_eq!(
        run(
            &input,
            &[R {
                src: Some(&["missing"]),
                target: Some("c"),
                ..R::default()
            }]
        ),
        set(&input)
    );
    // ... and an existing target is deleted.
    assert_eq!(
        run(
            &input,
            &[R {
                src: Some(&["missing"]),
                target: Some("a"),
                ..R::default()
            }]
        ),
        set(&[("__name__", "up"), ("b", "2")])
    );
    // Literal replacement on a missing source sets it (Prometheus's fast path).
    assert_eq!(
        run(
            &input,
            &[R {
                src: Some(&["missing"]),
                target: Some("c"),
                repl: Some("x"),
                ..R::default()
            }]
        ),
        set(&[("__name__", "up"), ("a", "1"), ("b", "2"), ("c", "x")])
    );
    // The default regex `(.*)` does not match a value with a newline: no replacement.
    assert_eq!(
        run(
            &[("a", "line1\nline2")],
            &[R {
                src: Some(&["a"]),
                target: Some("b"),
                ..R::default()
            }]
        ),
        set(&[("a", "line1\nline2")])
    );
    assert_eq!(
        run(
            &[("a", "one line")],
            &[R {
                src: Some(&["a"]),
                target: Some("b"),
                repl: Some("<$1>"),
                ..R::default()
            }]
        ),
        set(&[("a", "one line"), ("b", "<one line>")])
    );
    // Dropping every label drops the series.
    assert_eq!(
        run(
            &input,
            &[R {
                regex: Some(".*"),
                action: act("labeldrop"),
                ..R::default()
            }]
        ),
        None
    );
    // Removing __name__ is allowed (Prometheus sends such series as they are).
    assert_eq!(
        run(
            &input,
            &[R {
                regex: Some("__name__"),
                action: act("labeldrop"),
                ..R::default()
            }]
        ),
        set(&[("a", "1"), ("b", "2")])
    );
    // labelmap walks base labels first, then those set by earlier rules, in order: the
    // later source wins on a shared target.
    assert_eq!(
        run(
            &[("__name__", "up"), ("x_a", "base")],
            &[
                R {
                    src: Some(&["__name__"]),
                    target: Some("y_a"),
                    repl: Some("set"),
                    ..R::default()
                },
                R {
                    regex: Some("[xy]_(.*)"),
                    repl: Some("$1"),
                    action: act("labelmap"),
                    ..R::default()
                },
            ]
        ),
        set(&[
            ("__name__", "up"),
            ("a", "set"),
            ("x_a", "base"),
            ("y_a", "set")
        ])
    );
    // Separator and multiple sources; a missing source contributes "".
    assert_eq!(
        run(
            &input,
            &[R {
                src: Some(&["a", "missing", "b"]),
                sep: Some("|"),
                target: Some("j"),
                ..R::default()
            }]
        ),
        set(&[("__name__", "up"), ("a", "1"), ("b", "2"), ("j", "1||2")])
    );
    // Case mapping one rune to one rune, as Go does.
    assert_eq!(
        run(
            &[("a", "straße İx")],
            &[
                R {
                    src: Some(&["a"]),
                    target: Some("u"),
                    action: act("uppercase"),
                    ..R::default()
                },
                R {
                    src: Some(&["a"]),
                    target: Some("l"),
                    action: act("lowercase"),
                    ..R::default()
                },
            ]
        ),
        set(&[("a", "straße İx"), ("l", "straße ix"), ("u", "STRAßE İX")])
    );
    // Lowercasing an empty value deletes the target.
    assert_eq!(
        run(
            &input,
            &[R {
                src: Some(&["missing"]),
                target: Some("a"),
                action: act("lowercase"),
                ..R::default()
            }]
        ),
        set(&[("__name__", "up"), ("b", "2")])
    );
    // keepequal compares against a label set by an earlier rule.
    assert_eq!(
        run(
            &input,
            &[
                R {
                    src: Some(&["a"]),
                    target: Some("c"),
                    ..R::default()
                },
                R {
                    src: Some(&["c"]),
                    target: Some("a"),
                    action: act("keepequal"),
                    ..R::default()
                },
            ]
        ),
        set(&[("__name__", "up"), ("a", "1"), ("b", "2"), ("c", "1")])
    );
}
