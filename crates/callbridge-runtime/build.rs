// `sqlx::migrate!` embeds `migrations/` at compile time and tracks the files it read, but
// not the directory: without this, a newly added migration would not trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
