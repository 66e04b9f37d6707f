fn main() {
    #[cfg(feature = "wgpu")]
    // SAFETY: the first thing the process does, while it has one thread.
    unsafe {
        mnist_cnn::engine::quiet_mesa_display_probe()
    };
    std::process::exit(mnist_cnn::cli::main());
}
