//! The drive's transaction scheduling across paths: a paired comparison keeps a whole
//! transaction on one path and puts one of each pair (or block) on each.

use super::*;

fn targets(ctx: &Ctx, n: usize) -> Vec<(u64, String, String)> {
    (0..n)
        .map(|_| {
            let (seq, p) = ctx.next_transaction();
            let addr = |c: &Client| match c {
                Client::PerCall { addr, .. } => addr.to_string(),
                Client::Persistent(..) => unreachable!("per-call clients"),
            };
            let (pre, update) = p.clients(0);
            (seq, addr(pre), addr(update))
        })
        .collect()
}

#[test]
fn compare_target_puts_one_transaction_of_each_pair_on_each_path() {
    let mut ctx = Ctx::new(DriveArgs {
        target: "127.0.0.1:1001".parse().unwrap(),
        update_target: Some("127.0.0.1:1002".parse().unwrap()),
        compare_target: Some("127.0.0.1:2001".parse().unwrap()),
        ..DriveArgs::default()
    });
    ctx.pair_seed = 7; // deterministic order
    let a = ("127.0.0.1:1001".to_string(), "127.0.0.1:1002".to_string());
    let b = ("127.0.0.1:2001".to_string(), "127.0.0.1:2001".to_string());
    let seen = targets(&ctx, 2000);
    let mut a_first = 0;
    for pair in seen.chunks(2) {
        let [(s0, pre0, upd0), (s1, pre1, upd1)] = pair else {
            unreachable!()
        };
        assert_eq!((*s0 / 2, *s1), (*s1 / 2, s0 + 1));
        let (x, y) = ((pre0.clone(), upd0.clone()), (pre1.clone(), upd1.clone()));
        // A whole transaction stays on one path (PreRequest and update targets together).
        assert!(
            (x == a && y == b) || (x == b && y == a),
            "pair {}: {x:?} {y:?}",
            s0 / 2
        );
        a_first += usize::from(x == a);
    }
    // Neither path always takes the first phase of the pair.
    assert!(
        (400..=600).contains(&a_first),
        "A first in {a_first} of 1000 pairs"
    );
}

#[test]
fn compare_block_keeps_blocks_of_transactions_on_one_path() {
    let ctx = Ctx::new(DriveArgs {
        target: "127.0.0.1:1001".parse().unwrap(),
        compare_target: Some("127.0.0.1:2001".parse().unwrap()),
        compare_block: 100,
        ..DriveArgs::default()
    });
    let seen = targets(&ctx, 4000);
    for (i, pair) in seen.chunks(200).enumerate() {
        let (first, second) = pair.split_at(100);
        let one_path =
            |block: &[(u64, String, String)]| block.iter().all(|(_, pre, _)| *pre == block[0].1);
        assert!(
            one_path(first) && one_path(second),
            "block pair {i} mixes paths"
        );
        assert_ne!(
            first[0].1, second[0].1,
            "block pair {i}: both blocks on one path"
        );
    }
}

#[test]
fn without_compare_target_every_transaction_takes_path_a() {
    let ctx = Ctx::new(DriveArgs {
        target: "127.0.0.1:1001".parse().unwrap(),
        ..DriveArgs::default()
    });
    assert_eq!(ctx.paths.len(), 1);
    for (_, pre, update) in targets(&ctx, 3) {
        assert_eq!(
            (pre.as_str(), update.as_str()),
            ("127.0.0.1:1001", "127.0.0.1:1001")
        );
    }
}
