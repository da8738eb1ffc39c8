//! The depot writer's planning step, without I/O: planning a set against a
//! state holding many configs, packing a round of non-conflicting commands,
//! and a plan → commit cycle that replaces a held config.

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pxeconf::depot::writer::{Rendered, Round, SetPlan, State};
use pxeconf::domain::{ActionRequest, Fqdn, ProductId};

/// Configs the state holds before each measurement.
const HELD: u32 = 10_000;
/// Commands in one round (as the writer takes them in a batch).
const ROUND: u32 = 256;

fn rendered(n: u32, revision: u64, content: &Arc<str>) -> Rendered {
    let b = n.to_be_bytes();
    Rendered {
        fqdn: Fqdn::parse(&format!("client{n:06}.example.org"), "fqdn").unwrap(),
        product_id: ProductId::parse("win10-x64", "product").unwrap(),
        action_request: ActionRequest::Setup,
        revision,
        files: vec![
            format!("5a1e0000-0000-4000-8000-{n:012x}"),
            format!(
                "01-02-50-{:02x}-{:02x}-{:02x}-{:02x}",
                b[0], b[1], b[2], b[3]
            ),
        ],
        content: content.clone(),
        template: "install".into(),
        epoch: Arc::from(""),
    }
}

/// Plans and commits one set; the state now holds it.
fn set(state: &mut State, config: Rendered) {
    let SetPlan::Write(planned) = state.plan_set(config) else {
        panic!("a fresh revision is written");
    };
    let mut round = Round::default();
    round.push(planned, ());
    for (op, _files, ()) in round.take() {
        state.commit(op, Ok(()), SystemTime::UNIX_EPOCH);
    }
}

fn held_state(content: &Arc<str>) -> State {
    let mut state = State::default();
    for n in 0..HELD {
        set(&mut state, rendered(n, 1, content));
    }
    state
}

fn bench(c: &mut Criterion) {
    let content: Arc<str> = Arc::from("x".repeat(400));
    let mut state = held_state(&content);
    c.bench_function("plan_set, new client, 10k held", |b| {
        b.iter_batched(
            || rendered(HELD + 1, 1, &content),
            |config| black_box(state.plan_set(config)),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("round of 256 sets: plan, check, push, take", |b| {
        b.iter_batched(
            || {
                (0..ROUND)
                    .map(|n| rendered(HELD + n, 1, &content))
                    .collect::<Vec<_>>()
            },
            |configs| {
                let mut round = Round::default();
                for config in configs {
                    let keys = state.set_keys(&config);
                    if let SetPlan::Write(planned) = state.plan_set(config)
                        && !round.touches(&keys)
                    {
                        round.push(planned, ());
                    }
                }
                black_box(round.take())
            },
            BatchSize::SmallInput,
        )
    });
    let mut revision = 1;
    c.bench_function("plan + commit, replacing a held config", |b| {
        b.iter_batched(
            || {
                revision += 1;
                rendered(42, revision, &content)
            },
            |config| set(&mut state, config),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
