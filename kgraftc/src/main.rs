//! The `kgraftc` command: see the `kgraftc` library, which it runs.

/// A faster allocator for the hundreds of thousands of small tokens pest and syn make while
/// checking: with glibc's, allocation was a quarter of a check's instructions
/// (`cargo bench -p kgraftc --bench kernel` prints the check times).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kgraftc::main()
}
