//! How long `check` (and `lower`) take on a generated patch of 1,000 replacements.
//!
//! Run with `cargo bench -p kgraft-lang --bench check`.

use criterion::{Criterion, criterion_group, criterion_main};

/// A patch replacing `count` functions, each with a small body using an extern and shadow data.
fn generated(count: usize) -> String {
    let mut src = String::from(
        "//! A generated patch.\npatch generated {\n    description: \"generated for the benchmark\",\n    kernel: \"6.1.0-*-amd64\",\n}\n\n\
         extern {\n    fn _printk(fmt: *const c_char, ...) -> c_int;\n}\n\n\
         shadow gen_dev {\n    calls: u64 = 0,\n}\n\n",
    );
    for i in 0..count {
        src.push_str(&format!(
            "/// Replacement number {i}.\nreplace fn gen_fn_{i}(dev: *mut gen_dev, x: u64) -> u64 {{\n    \
             *shadow!(dev.calls) += 1;\n    if x > {i} {{\n        _printk(c\"big %llu\\n\".as_ptr(), x);\n    }}\n    \
             x.wrapping_mul({i}).rotate_left(3) ^ *shadow!(dev.calls)\n}}\n\n"
        ));
    }
    src
}

fn bench(c: &mut Criterion) {
    let src = generated(1000);
    let mut group = c.benchmark_group("1000 replacements");
    group.sample_size(20);
    group.bench_function("check", |b| {
        b.iter(|| kgraft_lang::check("generated.kgp", std::hint::black_box(&src)).map(|c| c.name().len()).unwrap_or(0))
    });
    let checked = match kgraft_lang::check("generated.kgp", &src) {
        Ok(checked) => checked,
        Err(d) => panic!("the generated patch does not check: {:?}", d.list),
    };
    group.bench_function("lower", |b| {
        b.iter(|| kgraft_lang::lower(std::hint::black_box(&checked)).map(|l| l.expanded.len()).unwrap_or(0))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
