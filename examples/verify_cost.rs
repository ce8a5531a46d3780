//! Measures what one argon2id password verification costs with riftd's
//! parameters, to show why it runs off the event loop.
//! Run: `cargo run --release --example verify_cost`

use riftd::accounts::{hash_password, verify};
use std::time::Instant;

fn main() {
    let hash = hash_password("correct horse battery staple").expect("hashing works");
    let mut samples: Vec<f64> = (0..21)
        .map(|round| {
            let started = Instant::now();
            let password = if round % 2 == 0 {
                "correct horse battery staple"
            } else {
                "wrong"
            };
            let _ = verify(Some(&hash), password);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let unknown_started = Instant::now();
    let _ = verify(None, "anything");
    let _ = unknown_started;
    let mut unknown: Vec<f64> = (0..11)
        .map(|_| {
            let started = Instant::now();
            let _ = verify(None, "anything");
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    unknown.sort_by(f64::total_cmp);
    println!(
        "argon2id verify: median {:.1} ms (min {:.1}, max {:.1}, 21 runs); unknown user (dummy hash): median {:.1} ms",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        unknown[unknown.len() / 2]
    );
}
