//! Decryption throughput for typical webhook bodies (1 KiB) and large ones (64 KiB), per cipher
//! mode, including the base64 decoding the gateway does first.
//! Run with `cargo bench --bench decrypt`; results are recorded in docs/benchmarks.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hookwarden::decrypt::{Cipher, Decryptor};

fn bench_decrypt(c: &mut Criterion) {
    let mut group = c.benchmark_group("decrypt");
    for size in [1024usize, 64 * 1024] {
        let plaintext: Vec<u8> = (0..size).map(|i| b"{\"k\":\"abcdefgh\"}"[i % 16]).collect();
        for cipher in [Cipher::Aes256Cbc, Cipher::Aes256Ctr, Cipher::Aes256Gcm] {
            let d = Decryptor::new(cipher, b"0123456789abcdef0123456789abcdef");
            let iv = vec![7u8; cipher.iv_lens()[0]];
            let (body, tag) = d.encrypt(&plaintext, &iv).unwrap();
            let iv_hex = hex::encode(&iv);
            let tag_hex = tag.map(hex::encode);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(
                BenchmarkId::new(cipher.name(), format!("{} KiB", size / 1024)),
                &body,
                |b, body| {
                    b.iter(|| {
                        d.decrypt(
                            black_box(body.as_bytes()),
                            Some(&iv_hex),
                            tag_hex.as_deref(),
                        )
                        .unwrap()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_decrypt);
criterion_main!(benches);
