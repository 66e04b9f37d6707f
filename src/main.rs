fn main() {
    std::process::exit(mnist_cnn::cli::main());
}
