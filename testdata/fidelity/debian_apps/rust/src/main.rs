fn main() {
    let mut buf = itoa::Buffer::new();
    println!("hello from rust, 6 * 7 = {}", buf.format(6 * 7));
}
