//! `callbridge-bench-naive-ingress`: the contrast ingress of stage 2 (see
//! `callbridge_bench::naive_ingress`). Not a product binary.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = callbridge_bench::naive_ingress::NaiveIngressConfig::from_env()?;
    callbridge_bench::naive_ingress::serve(config).await
}
