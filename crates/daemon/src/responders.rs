//! What the engine thread does with its conclusions besides storing them:
//! the actions each batch calls for (the freeze webhook, pages), planned
//! before the commit so they are durable with it, and the log lines and
//! the delivery worker's wake-up after it.

use std::sync::Arc;

use drainguard_engine::Recovery;
use drainguard_model::{Freeze, FreezeId, Timestamp};
use drainguard_respond::{LogResponder, Pager, pagerduty::PagerState, webhook};
use drainguard_store::{Batch, NewAction};
use tokio::sync::Notify;

/// Where the pager's open incidents are kept in the store.
pub(crate) const PAGER_KEY: &str = "pager";

/// The responders as the engine thread drives them.
#[derive(Debug)]
pub(crate) struct Responders {
    log: LogResponder,
    webhook: bool,
    pager: Option<Pager>,
    wake: Arc<Notify>,
}

impl Responders {
    /// `pager_state` is what the last run left open.
    pub(crate) fn new(
        webhook: bool,
        pager: Option<drainguard_respond::PagerConfig>,
        pager_state: PagerState,
        wake: Arc<Notify>,
    ) -> Responders {
        Responders {
            log: LogResponder,
            webhook,
            pager: pager.map(|cfg| Pager::new(cfg, pager_state)),
            wake,
        }
    }

    fn save_pager(&mut self, batch: &mut Batch) {
        if let Some(p) = &mut self.pager
            && p.take_changed()
            && let Ok(v) = serde_json::to_value(p.state())
        {
            batch.state.push((PAGER_KEY.to_string(), v));
        }
    }

    /// Adds to `batch` the actions its findings, freezes and recoveries
    /// call for, and the pager's state with them. Actions are idempotent
    /// by key, so planning a freeze the store already holds is harmless.
    pub(crate) fn plan(&mut self, batch: &mut Batch, recoveries: &[Recovery]) {
        let mut actions: Vec<NewAction> = Vec::new();
        let now = Timestamp::now();
        if let Some(p) = &mut self.pager {
            actions.extend(batch.findings.iter().filter_map(|f| p.on_finding(f, now)));
            actions.extend(batch.freezes.iter().filter_map(|f| p.on_freeze(f, now)));
            actions.extend(
                recoveries
                    .iter()
                    .filter_map(|r| p.on_recovered(&r.kind, r.chain.as_str())),
            );
        }
        if self.webhook {
            actions.extend(batch.freezes.iter().map(webhook::raised));
        }
        batch.actions.extend(actions);
        self.save_pager(batch);
    }

    /// The actions an operator's freeze calls for.
    pub(crate) fn plan_manual(&mut self, freeze: &Freeze) -> (Vec<NewAction>, Batch) {
        let mut actions = Vec::new();
        let mut state = Batch::default();
        if let Some(p) = &mut self.pager
            && let Some(a) = p.on_freeze(freeze, Timestamp::now())
        {
            actions.push(a);
        }
        if self.webhook {
            actions.push(webhook::raised(freeze));
        }
        self.save_pager(&mut state);
        (actions, state)
    }

    /// The actions a lift calls for: telling the exchange.
    pub(crate) fn plan_lift(&self, freeze: &Freeze, actor: &str, reason: &str) -> Vec<NewAction> {
        if self.webhook {
            vec![webhook::lifted(freeze, actor, reason)]
        } else {
            Vec::new()
        }
    }

    /// Incidents that aged out, as a batch to commit (empty if none).
    pub(crate) fn tick(&mut self, now: Timestamp, active: &[Freeze]) -> Batch {
        let mut batch = Batch::default();
        if let Some(p) = &mut self.pager {
            let ids: Vec<FreezeId> = active.iter().map(|f| f.id.clone()).collect();
            batch.actions = p.tick(now, &ids);
        }
        self.save_pager(&mut batch);
        batch
    }

    /// After the commit: the log lines, and the delivery worker woken.
    pub(crate) fn committed(&self, batch: &Batch, new_freezes: &[FreezeId]) {
        for f in &batch.findings {
            self.log.on_finding(f);
        }
        for f in batch.freezes.iter().filter(|f| new_freezes.contains(&f.id)) {
            self.log.on_freeze(f);
        }
        if !batch.actions.is_empty() {
            self.wake.notify_one();
        }
    }

    /// Wakes the delivery worker (actions queued outside a batch).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}
