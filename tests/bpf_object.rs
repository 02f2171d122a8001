//! The eBPF object the daemon embeds is what its committed source builds to: the daemon
//! builds without clang (aya loads the object), and this test keeps the object honest.

use std::process::Command;

#[test]
fn the_committed_ebpf_object_is_built_from_the_committed_source() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/tools/build-bpf"))
        .arg("--check")
        .output()
        .expect("run tools/build-bpf (it needs clang-14 and llvm-strip-14: tests/run-all.sh installs them)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
