//! Number normalisation: reading typed numbers with libphonenumber's metadata, fresh
//! and through the cache, beside the plain international-only digit parser.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otpd::numbers::e164::E164;
use otpd::numbers::reader::{NumberParser, NumberRules};

/// Typed numbers of several countries and shapes.
fn inputs() -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..256u64 {
        let n = 100_000 + i * 37;
        out.push(match i % 6 {
            0 => format!("+34 6{:02} {:03} {:03}", n % 100, n % 1000, (n / 7) % 1000),
            1 => format!("0034 7{:08}", 10_000_000 + n),
            2 => format!("6{:08}", n * 11 % 100_000_000),
            3 => format!("+44 7400 {:06}", n),
            4 => format!("+33 6 {:08}", n * 3),
            _ => format!("+49 151 {:08}", n * 5),
        });
    }
    out
}

fn numbers(c: &mut Criterion) {
    let inputs = inputs();
    let rules = NumberRules::new("ES", true).unwrap();
    let cached = NumberParser::new(rules, 100_000);
    for input in &inputs {
        let _ = cached.parse(input);
    }
    let international: Vec<String> = inputs
        .iter()
        .filter_map(|i| cached.parse(i).ok())
        .map(|n| n.e164.to_string())
        .collect();

    let mut group = c.benchmark_group("numbers");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("metadata_uncached", |b| {
        b.iter(|| {
            for input in &inputs {
                black_box(rules.parse_uncached(black_box(input)).ok());
            }
        })
    });
    group.bench_function("metadata_cached", |b| {
        b.iter(|| {
            for input in &inputs {
                black_box(cached.parse(black_box(input)).ok());
            }
        })
    });
    group.throughput(Throughput::Elements(international.len() as u64));
    group.bench_function("digits_only_international", |b| {
        b.iter(|| {
            for input in &international {
                black_box(E164::parse_international(black_box(input)).ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, numbers);
criterion_main!(benches);
