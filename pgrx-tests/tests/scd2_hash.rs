//! warden.hash_diff on a live cluster, as an application role: for random
//! rows and random session settings, two rows hash equal exactly when
//! Postgres calls them equal (`IS NOT DISTINCT FROM`), and a row's hash
//! does not move with DateStyle, TimeZone, IntervalStyle,
//! extra_float_digits or client_encoding.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use pg_warden_integration::*;

/// One side of a pair, as SQL literals (NULL for None).
#[derive(Debug, Clone)]
struct Row {
    i: Option<i64>,
    t: Option<String>,
    f: Option<f64>,
    n: Option<(i64, u32, u32)>,  // mantissa, scale, extra trailing zeros
    ts: Option<(i64, i32)>,      // seconds since epoch, offset in minutes
    iv: Option<(i32, i32, i64)>, // months, days, microseconds
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(1.0),
        any::<f64>(),
    ]
}

fn row() -> impl Strategy<Value = Row> {
    (
        proptest::option::weighted(0.8, prop_oneof![Just(0i64), Just(1), any::<i64>()]),
        proptest::option::weighted(
            0.8,
            prop_oneof![
                Just(String::new()),
                Just("NULL".to_string()),
                "[a-c|é€ ]{0,4}"
            ],
        ),
        proptest::option::weighted(0.8, float()),
        proptest::option::weighted(0.8, (-3i64..3, 0u32..3, 0u32..3)),
        proptest::option::weighted(0.8, (0i64..3, prop_oneof![Just(0), Just(60), Just(-330)])),
        proptest::option::weighted(
            0.8,
            (
                0i32..2,
                0i32..31,
                prop_oneof![Just(0i64), Just(86_400_000_000), Just(1)],
            ),
        ),
    )
        .prop_map(|(i, t, f, n, ts, iv)| Row { i, t, f, n, ts, iv })
}

/// A second row that is often equal to the first under another spelling
/// (offsets, trailing zeros, -0, days as hours), sometimes different.
fn pair() -> impl Strategy<Value = (Row, Row)> {
    (
        row(),
        row(),
        proptest::array::uniform6(proptest::bool::weighted(0.85)),
    )
        .prop_map(|(a, other, keep)| {
            let mut b = other;
            if keep[0] {
                b.i = a.i;
            }
            if keep[1] {
                b.t = a.t.clone();
            }
            if keep[2] {
                b.f = a.f.map(|f| if f == 0.0 { -f } else { f });
            }
            if keep[3] {
                b.n = a.n.map(|(m, s, z)| (m, s, z + 1));
            }
            if keep[4] {
                b.ts = a.ts.map(|(s, _)| (s, 120));
            }
            if keep[5] {
                // a day as 24 hours
                b.iv = a.iv.map(|(m, d, us)| {
                    if d > 0 {
                        (m, d - 1, us + 86_400_000_000)
                    } else {
                        (m, d, us)
                    }
                });
            }
            (a, b)
        })
}

fn float_literal(f: f64) -> String {
    if f.is_nan() {
        "'NaN'".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "'Infinity'".into()
        } else {
            "'-Infinity'".into()
        }
    } else {
        // shortest round-trip form; -0 keeps its sign
        format!("'{f:?}'")
    }
}

fn values_sql(id: i32, side: &str, r: &Row) -> String {
    let null = || "NULL".to_string();
    let t =
        r.t.as_ref()
            .map_or_else(null, |s| format!("'{}'", s.replace('\'', "''")));
    let f = r.f.map_or_else(null, float_literal);
    let n = r.n.map_or_else(null, |(m, scale, zeros)| {
        // m / 10^scale written with `zeros` extra trailing zeros
        let digits = format!("{:0>width$}", m.unsigned_abs(), width = scale as usize + 1);
        let (int, frac) = digits.split_at(digits.len() - scale as usize);
        let frac = format!("{frac}{}", "0".repeat(zeros as usize));
        let sign = if m < 0 { "-" } else { "" };
        if frac.is_empty() {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        }
    });
    let ts = r.ts.map_or_else(null, |(s, off)| {
        // the same instant written in the given UTC offset
        format!(
            "(to_timestamp({s}) AT TIME ZONE 'UTC' + interval '{off} minutes')::text || '{}{:02}:{:02}'",
            if off < 0 { '-' } else { '+' },
            off.abs() / 60,
            off.abs() % 60
        )
    });
    let ts = if r.ts.is_some() {
        format!("({ts})::timestamptz")
    } else {
        ts
    };
    let iv = r.iv.map_or_else(null, |(m, d, us)| {
        format!("make_interval(months => {m}, days => {d}) + interval '{us} microseconds'")
    });
    let i = r.i.map_or_else(null, |i| i.to_string());
    format!("({id}, '{side}', {i}, {t}, {f}::float8, {n}::numeric, {ts}, {iv})")
}

/// The value columns (not the pair's id and side).
const COLUMNS: &[&str] = &["i", "t", "f", "n", "ts", "iv"];

const SETTINGS: &[&[&str]] = &[
    &["DateStyle = 'SQL, DMY'", "TimeZone = 'Asia/Kathmandu'"],
    &[
        "DateStyle = 'German'",
        "IntervalStyle = 'sql_standard'",
        "extra_float_digits = -15",
    ],
    &[
        "TimeZone = 'America/St_Johns'",
        "IntervalStyle = 'iso_8601'",
        "extra_float_digits = 3",
    ],
    &["client_encoding = 'LATIN9'", "DateStyle = 'Postgres, YMD'"],
    &[],
];

#[test]
fn hash_diff_equal_iff_values_equal_under_any_settings() {
    let cluster = Cluster::start("scd2-hash", &[]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE EXTENSION pg_warden;
             CREATE ROLE app LOGIN; GRANT warden_app TO app;
             CREATE TABLE pairs (id int, side text, i bigint, t text, f float8, n numeric,
                                 ts timestamptz, iv interval, PRIMARY KEY (id, side));
             GRANT ALL ON pairs TO app;",
        )
        .unwrap();
    // the runner takes a Fn: state lives in cells
    let app = std::cell::RefCell::new(cluster.connect_as("postgres", "app"));
    let next_id = std::cell::Cell::new(0);
    let checked = std::cell::Cell::new((0, 0));
    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    runner
        .run(&(pair(), 0..SETTINGS.len()), |((a, b), setting)| {
            let id = next_id.get() + 1;
            next_id.set(id);
            let mut app = app.borrow_mut();
            app.batch_execute(&format!(
                "INSERT INTO pairs VALUES {}, {}",
                values_sql(id, "a", &a),
                values_sql(id, "b", &b)
            ))
            .unwrap();
            let baseline: Vec<u8> = app
                .query_one("SELECT warden.hash_diff(p, $2) FROM pairs p WHERE id = $1 AND side = 'a'", &[&id, &COLUMNS])
                .unwrap()
                .get(0);
            let mut tx = app.transaction().unwrap();
            for s in SETTINGS[setting] {
                tx.batch_execute(&format!("SET LOCAL {s}")).unwrap();
            }
            let row = tx
                .query_one(
                    "SELECT warden.hash_diff(a, $2) = warden.hash_diff(b, $2),
                            ROW(a.i, a.t, a.f, a.n, a.ts, a.iv) IS NOT DISTINCT FROM ROW(b.i, b.t, b.f, b.n, b.ts, b.iv),
                            warden.hash_diff(a, $2)
                       FROM pairs a JOIN pairs b USING (id)
                      WHERE id = $1 AND a.side = 'a' AND b.side = 'b'",
                    &[&id, &COLUMNS],
                )
                .unwrap();
            tx.commit().unwrap();
            let (hash_equal, values_equal, under_settings): (bool, bool, Vec<u8>) =
                (row.get(0), row.get(1), row.get(2));
            prop_assert_eq!(hash_equal, values_equal, "rows {:?} / {:?}", a, b);
            prop_assert_eq!(&under_settings, &baseline, "hash moved under {:?}", SETTINGS[setting]);
            let (same, different) = checked.get();
            checked.set(if values_equal { (same + 1, different) } else { (same, different + 1) });
            Ok(())
        })
        .unwrap();
    // both outcomes were exercised, many times
    let (same, different) = checked.get();
    assert!(
        same > 30 && different > 30,
        "equal/different pairs: {same}/{different}"
    );
}
