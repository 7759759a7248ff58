//! A NATS JetStream client for tests that read or write the engine behind gtmd's back
//! (a hand-written key, a hidden bundle): one current-thread tokio runtime per call.

use std::future::Future;

/// Connects to `url` and runs `f` with a JetStream context; returns what it returns.
pub fn with_jetstream<T, F, Fut>(url: &str, f: F) -> T
where
    F: FnOnce(async_nats::jetstream::Context) -> Fut,
    Fut: Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        f(async_nats::jetstream::new(client)).await
    })
}

/// Writes `key` = `value` in the KV bucket `bucket`.
pub fn kv_put(url: &str, bucket: &str, key: &str, value: &[u8]) {
    let value = value.to_vec();
    with_jetstream(url, |js| async move {
        let kv = js.get_key_value(bucket).await.unwrap();
        kv.put(key, value.into()).await.unwrap();
    });
}

/// `key`'s value in the KV bucket `bucket`, if any.
pub fn kv_get(url: &str, bucket: &str, key: &str) -> Option<Vec<u8>> {
    with_jetstream(url, |js| async move {
        let kv = js.get_key_value(bucket).await.unwrap();
        kv.get(key).await.unwrap().map(|v| v.to_vec())
    })
}
