//! The simulator's memory: batches, the calls they hold, the API requests it answered.
//! In memory only; a restart forgets everything, as `POST /admin/reset` does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use callbridge_types::centralized_api::BatchStatusView;

use crate::config::Outcome;
use crate::ground_truth::{
    BatchTruth, CallState, CallTruth, EventTruth, GroundTruth, RequestTruth, Totals,
};

/// One item of an insert request, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    pub phone_number: String,
    pub custom_data: Option<serde_json::Value>,
}

#[derive(Debug, Default)]
struct Batch {
    accountcode: String,
    inserts: u32,
    accepted: BTreeMap<String, u32>,
    /// When the first insert stored it.
    created: Option<Instant>,
    /// Indexes into `Store::calls`, in acceptance order.
    calls: Vec<usize>,
}

/// Identifies one call across a reset: updates from deliveries started before a reset
/// are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRef {
    pub generation: u64,
    pub index: usize,
}

#[derive(Debug, Default)]
pub struct Store {
    generation: u64,
    /// Makes call ids unique across restarts and resets of the simulator.
    run_tag: String,
    batches: BTreeMap<i32, Batch>,
    calls: Vec<CallTruth>,
    requests: Vec<RequestTruth>,
    /// `PUT /admin/script`: the outcomes still to come, in order, for each scripted
    /// number; a number whose script ran out gets the outcome mix again.
    script: HashMap<String, VecDeque<Outcome>>,
}

impl Store {
    pub fn new(run_tag: String) -> Self {
        Self {
            run_tag,
            ..Self::default()
        }
    }

    /// Forgets everything; deliveries still running for old calls are ignored from now on.
    pub fn reset(&mut self) {
        let generation = self.generation + 1;
        *self = Self {
            generation,
            run_tag: std::mem::take(&mut self.run_tag),
            ..Self::default()
        };
    }

    /// Queues `items` under `batch_id` (appending when the batch exists) and returns how
    /// many were stored.
    pub fn insert_items(&mut self, batch_id: i32, accountcode: &str, items: &[QueueItem]) -> usize {
        if items.is_empty() {
            return 0;
        }
        let batch = self.batches.entry(batch_id).or_insert_with(|| Batch {
            accountcode: accountcode.to_owned(),
            created: Some(Instant::now()),
            ..Batch::default()
        });
        batch.inserts += 1;
        let accepted_at = chrono::Utc::now();
        for item in items {
            *batch.accepted.entry(item.phone_number.clone()).or_insert(0) += 1;
            let index = self.calls.len();
            batch.calls.push(index);
            self.calls.push(CallTruth {
                call_id: format!("sim-{batch_id}-{index}-{}", self.run_tag),
                batch_id,
                phone_number: item.phone_number.clone(),
                custom_data: item.custom_data.clone(),
                accepted_at,
                state: CallState::Queued,
                outcome: None,
                reordered: false,
                events: Vec::new(),
            });
        }
        items.len()
    }

    /// How long ago the batch was first stored; `None` for a batch it does not hold.
    pub fn batch_age(&self, batch_id: i32) -> Option<Duration> {
        self.batches
            .get(&batch_id)
            .and_then(|batch| batch.created)
            .map(|created| created.elapsed())
    }

    pub fn batch_status(&self, batch_id: i32) -> Option<BatchStatusView> {
        let batch = self.batches.get(&batch_id)?;
        let calls: Vec<&CallTruth> = batch
            .calls
            .iter()
            .map(|index| &self.calls[*index])
            .collect();
        let count =
            |wanted: fn(&CallTruth) -> bool| calls.iter().filter(|call| wanted(call)).count();
        let queued = count(|call| call.state == CallState::Queued);
        let in_progress = count(|call| call.state == CallState::InProgress);
        let completed = count(|call| {
            call.state == CallState::Ended && call.outcome == Some(Outcome::Completed)
        });
        let failed = count(|call| {
            call.state == CallState::Ended && call.outcome != Some(Outcome::Completed)
        });
        let batch_status = if queued == calls.len() {
            "queued"
        } else if completed + failed == calls.len() {
            "completed"
        } else {
            "in_progress"
        };
        Some(BatchStatusView {
            status: "success",
            batch_id,
            accountcode: batch.accountcode.clone(),
            batch_status,
            total: calls.len(),
            queued,
            dispatched: calls.len() - queued,
            in_progress,
            completed,
            failed,
            phone_numbers: calls.iter().map(|call| call.phone_number.clone()).collect(),
        })
    }

    /// Replaces the script: from now on the nth call placed to a number it names ends
    /// in the nth outcome listed for it, then in what the outcome mix draws.
    pub fn set_script(&mut self, script: BTreeMap<String, Vec<Outcome>>) {
        self.script = script
            .into_iter()
            .map(|(number, outcomes)| (number, outcomes.into()))
            .collect();
    }

    /// The outcomes the script still holds, per number (numbers whose script ran out are
    /// left out).
    pub fn script(&self) -> BTreeMap<String, Vec<Outcome>> {
        self.script
            .iter()
            .filter(|(_, outcomes)| !outcomes.is_empty())
            .map(|(number, outcomes)| (number.clone(), outcomes.iter().copied().collect()))
            .collect()
    }

    /// Marks every queued call of `accountcode` as in progress with the outcome the
    /// script holds for its number, else the one `draw` picks, and returns them for
    /// delivery.
    pub fn dispatch_queued(
        &mut self,
        accountcode: &str,
        mut draw: impl FnMut() -> (Outcome, bool),
    ) -> Vec<(CallRef, CallTruth)> {
        let generation = self.generation;
        let mut dispatched = Vec::new();
        for batch in self
            .batches
            .values()
            .filter(|batch| batch.accountcode == accountcode)
        {
            for index in &batch.calls {
                let call = &mut self.calls[*index];
                if call.state != CallState::Queued {
                    continue;
                }
                let (drawn, reordered) = draw();
                let outcome = self
                    .script
                    .get_mut(&call.phone_number)
                    .and_then(VecDeque::pop_front)
                    .unwrap_or(drawn);
                call.state = CallState::InProgress;
                call.outcome = Some(outcome);
                call.reordered = reordered;
                dispatched.push((
                    CallRef {
                        generation,
                        index: *index,
                    },
                    call.clone(),
                ));
            }
        }
        dispatched
    }

    /// Applies `change` to the call unless a reset happened since it was dispatched.
    pub fn update_call(&mut self, call: CallRef, change: impl FnOnce(&mut CallTruth)) {
        if call.generation == self.generation
            && let Some(record) = self.calls.get_mut(call.index)
        {
            change(record);
        }
    }

    /// Starts the delivery record of one callback; returns its index in the call's events.
    pub fn begin_event(&mut self, call: CallRef, event_type: &str, call_status: &str) -> usize {
        let mut position = 0;
        self.update_call(call, |record| {
            position = record.events.len();
            record.events.push(EventTruth {
                event_type: event_type.to_owned(),
                call_status: call_status.to_owned(),
                ..EventTruth::default()
            });
        });
        position
    }

    pub fn update_event(
        &mut self,
        call: CallRef,
        event: usize,
        change: impl FnOnce(&mut EventTruth),
    ) {
        self.update_call(call, |record| {
            if let Some(event) = record.events.get_mut(event) {
                change(event);
            }
        });
    }

    pub fn record_request(&mut self, request: RequestTruth) {
        self.requests.push(request);
    }

    /// The ground truth, limited to one batch when `batch_id` is given.
    pub fn ground_truth(&self, batch_id: Option<i32>) -> GroundTruth {
        let wanted = |id: i32| batch_id.is_none_or(|wanted| wanted == id);
        let batches = self
            .batches
            .iter()
            .filter(|(id, _)| wanted(**id))
            .map(|(id, batch)| {
                let truth = BatchTruth {
                    accountcode: batch.accountcode.clone(),
                    inserts: batch.inserts,
                    accepted: batch.accepted.clone(),
                    calls: batch.calls.len(),
                };
                (*id, truth)
            })
            .collect();
        let calls: Vec<CallTruth> = self
            .calls
            .iter()
            .filter(|call| wanted(call.batch_id))
            .cloned()
            .collect();
        let requests: Vec<RequestTruth> = self
            .requests
            .iter()
            .filter(|request| batch_id.is_none() || request.batch_id == batch_id)
            .cloned()
            .collect();
        let totals = totals_of(&calls);
        GroundTruth {
            batches,
            calls,
            requests,
            totals,
            held_now: 0,
            pending_calls: 0,
        }
    }
}

fn totals_of(calls: &[CallTruth]) -> Totals {
    let mut totals = Totals {
        accepted_items: calls.len(),
        ..Totals::default()
    };
    for call in calls {
        match call.state {
            CallState::Queued => totals.calls_queued += 1,
            CallState::InProgress => totals.calls_in_progress += 1,
            CallState::Ended => totals.calls_ended += 1,
        }
        for event in &call.events {
            totals.callbacks_sent += 1;
            totals.callbacks_acknowledged += usize::from(event.acknowledged);
            totals.callbacks_given_up += usize::from(event.gave_up);
            totals.delivery_attempts += u64::from(event.attempts);
            totals.duplicates_sent += u64::from(event.duplicates_sent);
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(numbers: &[&str]) -> Vec<QueueItem> {
        numbers
            .iter()
            .map(|number| QueueItem {
                phone_number: (*number).to_owned(),
                custom_data: None,
            })
            .collect()
    }

    #[test]
    fn repeated_batch_id_appends_and_counts_each_acceptance() {
        let mut store = Store::new("t".into());
        assert_eq!(store.insert_items(7, "ACC", &items(&["1", "2"])), 2);
        assert_eq!(store.insert_items(7, "ACC", &items(&["2", "3"])), 2);

        let truth = store.ground_truth(None);
        assert_eq!(truth.batches[&7].inserts, 2);
        assert_eq!(truth.accepted_count(7, "1"), 1);
        assert_eq!(truth.accepted_count(7, "2"), 2);
        assert_eq!(truth.accepted_count(7, "3"), 1);
        let status = store.batch_status(7).unwrap();
        assert_eq!(status.total, 4);
        assert_eq!(status.phone_numbers, ["1", "2", "2", "3"]);
        assert_eq!(status.batch_status, "queued");
        assert!(store.batch_status(8).is_none());
    }

    #[test]
    fn call_ids_are_unique() {
        let mut store = Store::new("t".into());
        store.insert_items(1, "ACC", &items(&["1", "1"]));
        store.insert_items(2, "ACC", &items(&["1"]));
        let truth = store.ground_truth(None);
        let mut ids: Vec<&str> = truth
            .calls
            .iter()
            .map(|call| call.call_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn dispatch_takes_only_queued_calls_of_the_account() {
        let mut store = Store::new("t".into());
        store.insert_items(1, "ACC", &items(&["1", "2"]));
        store.insert_items(2, "OTHER", &items(&["3"]));
        let first = store.dispatch_queued("ACC", || (Outcome::Busy, false));
        assert_eq!(first.len(), 2);
        assert!(
            store
                .dispatch_queued("ACC", || (Outcome::Busy, false))
                .is_empty()
        );

        let status = store.batch_status(1).unwrap();
        assert_eq!(
            (status.queued, status.in_progress, status.dispatched),
            (0, 2, 2)
        );
        assert_eq!(store.batch_status(2).unwrap().queued, 1);
    }

    #[test]
    fn a_scripted_number_gets_its_outcomes_in_order_then_the_mix() {
        let mut store = Store::new("t".into());
        store.set_script(BTreeMap::from([(
            "1".to_owned(),
            vec![Outcome::Busy, Outcome::NoAnswer],
        )]));
        let mut outcomes = Vec::new();
        for batch in 1..=3 {
            store.insert_items(batch, "ACC", &items(&["1", "2"]));
            for (_, call) in store.dispatch_queued("ACC", || (Outcome::Completed, false)) {
                outcomes.push((call.phone_number, call.outcome.unwrap()));
            }
        }
        let of = |number: &str| -> Vec<Outcome> {
            outcomes
                .iter()
                .filter(|(n, _)| n == number)
                .map(|(_, outcome)| *outcome)
                .collect()
        };
        assert_eq!(
            of("1"),
            [Outcome::Busy, Outcome::NoAnswer, Outcome::Completed]
        );
        assert_eq!(of("2"), [Outcome::Completed; 3]);
        assert!(store.script().is_empty(), "the script ran out");

        store.set_script(BTreeMap::from([("2".to_owned(), vec![Outcome::Failed])]));
        store.reset();
        assert!(store.script().is_empty(), "a reset forgets the script");
    }

    #[test]
    fn updates_from_before_a_reset_are_ignored() {
        let mut store = Store::new("t".into());
        store.insert_items(1, "ACC", &items(&["1"]));
        let (call, _) = store
            .dispatch_queued("ACC", || (Outcome::Completed, false))
            .remove(0);
        store.reset();
        store.insert_items(1, "ACC", &items(&["9"]));
        store.update_call(call, |record| record.state = CallState::Ended);
        assert_eq!(store.ground_truth(None).calls[0].state, CallState::Queued);
    }
}
