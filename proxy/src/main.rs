//! The `sigsci-proxy` binary: parse configuration, then run.

fn main() {
    println!("sigsci-proxy: not built yet");
}
