//! Route lookup: the digit trie against a scan of the same 10,000-prefix table.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otpd::delivery::routes::{CarrierChoice, RouteTable, Target};
use otpd::numbers::e164::E164;

/// A deterministic spread of values (SplitMix64).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 10,000 distinct prefixes of 2 to 8 digits, as an operator's table of country codes,
/// operators' ranges and number blocks might look.
fn prefixes() -> Vec<String> {
    let mut set = std::collections::BTreeSet::new();
    let mut i = 0u64;
    while set.len() < 10_000 {
        i += 1;
        let r = mix(i);
        let len = 2 + (r % 7) as usize;
        let digits = format!("{:015}", r % 1_000_000_000_000_000);
        let p = format!("{}{}", 1 + (r >> 60) % 9, &digits[..len - 1]);
        set.insert(p);
    }
    set.into_iter().collect()
}

fn target(name: &str) -> Target {
    Target::Carriers(vec![CarrierChoice {
        carrier: otpd::domain::name::Name::new(name),
        priority: 1,
        weight: 1,
    }])
}

fn route(c: &mut Criterion) {
    let prefixes = prefixes();
    let routes: Vec<(String, Target)> = prefixes.iter().map(|p| (p.clone(), target(p))).collect();
    let table = RouteTable::new(routes.clone(), Some(target("default"))).unwrap();
    // Numbers that hit configured prefixes and numbers that fall to the default.
    let numbers: Vec<E164> = (0..1024u64)
        .map(|i| {
            let r = mix(i + 1_000_000);
            let digits = if i % 2 == 0 {
                let p = &prefixes[(r % prefixes.len() as u64) as usize];
                let rest = format!("{:015}", mix(r));
                format!("{p}{}", &rest[..11 - p.len().min(10)])
            } else {
                format!("{}", 10_000_000_000 + r % 89_999_999_999)
            };
            E164::from_digits_unchecked(digits.parse().unwrap())
        })
        .collect();

    let mut group = c.benchmark_group("route lookup, 10000 prefixes");
    group.throughput(Throughput::Elements(numbers.len() as u64));
    group.bench_function("trie", |b| {
        b.iter(|| {
            for n in &numbers {
                black_box(table.lookup(black_box(*n)));
            }
        })
    });
    group.bench_function("scan (naive)", |b| {
        b.iter(|| {
            for n in &numbers {
                let text = black_box(*n).digits().to_string();
                let best = routes
                    .iter()
                    .filter(|(p, _)| text.starts_with(p.as_str()))
                    .max_by_key(|(p, _)| p.len());
                black_box(best);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
