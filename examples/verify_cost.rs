//! Measures what one argon2id password verification costs with riftd's
//! parameters, to show why it runs off the event loop.
//! Run: `cargo run --release --example verify_cost`

use riftd::accounts::{Checker, hash_password};
use std::time::Instant;

fn main() {
    let hash = hash_password("correct horse battery staple").expect("hashing works");
    // Builds the dummy hash for unknown users, as the server does at start.
    let mut checker = Checker::new().expect("hashing works");
    let mut samples: Vec<f64> = (0..21)
        .map(|round| {
            let started = Instant::now();
            let password = if round % 2 == 0 {
                "correct horse battery staple"
            } else {
                "wrong"
            };
            let _ = checker.verify(Some(&hash), password);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let mut unknown: Vec<f64> = (0..11)
        .map(|_| {
            let started = Instant::now();
            let _ = checker.verify(None, "anything");
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
