import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { nextAlert, percentLeft, roomFor, type AlertInput, type AlertState } from "./disk-policy.js";

const MB = 1024 * 1024;
const t0 = new Date("2026-03-01T08:00:00Z");
const at = (ms: number) => new Date(t0.getTime() + ms);
const input = (percent: number, extra: Partial<AlertInput> = {}): AlertInput => ({
  percentLeft: percent,
  full: false,
  warnPercentLeft: 20,
  hysteresisPercent: 1,
  reminderMs: 24 * 3600_000,
  now: t0,
  ...extra,
});

describe("room and percentage left", () => {
  test("with a quota, the percentage left is what remains of the quota", () => {
    assert.equal(percentLeft({ usedBytes: 75 * MB, quotaBytes: 100 * MB, fsFreeBytes: 10_000 * MB, fsTotalBytes: 20_000 * MB }), 25);
  });
  test("with a quota larger than the free disk, the disk limits what is left", () => {
    assert.equal(percentLeft({ usedBytes: 10 * MB, quotaBytes: 100 * MB, fsFreeBytes: 5 * MB, fsTotalBytes: 20_000 * MB }), 5);
  });
  test("without a quota, the filesystem's free share counts", () => {
    assert.equal(percentLeft({ usedBytes: 10 * MB, quotaBytes: null, fsFreeBytes: 30 * MB, fsTotalBytes: 120 * MB }), 25);
  });
  test("a message that would cross the quota does not fit, and the reason names the quota", () => {
    const r = roomFor({ usedBytes: 95 * MB, quotaBytes: 100 * MB, fsFreeBytes: 10_000 * MB, fsTotalBytes: 20_000 * MB }, 6 * MB, 0);
    assert.equal(r.ok, false);
    assert.match(!r.ok ? r.reason : "", /quota of 100\.0 MiB reached/);
    assert.equal(roomFor({ usedBytes: 95 * MB, quotaBytes: 100 * MB, fsFreeBytes: 10_000 * MB, fsTotalBytes: 20_000 * MB }, 5 * MB, 0).ok, true);
  });
  test("a message that would eat into the filesystem reserve does not fit even without a quota", () => {
    const r = roomFor({ usedBytes: 0, quotaBytes: null, fsFreeBytes: 600 * MB, fsTotalBytes: 20_000 * MB }, 100 * MB, 512 * MB);
    assert.equal(r.ok, false);
    assert.match(!r.ok ? r.reason : "", /filesystem almost full/);
  });
});

describe("alert state machine", () => {
  const ok: AlertState = { level: "ok", alertedAt: null };

  test("crossing the warning threshold raises one warning, and staying below it raises nothing more", () => {
    const a = nextAlert(ok, input(19));
    assert.equal(a.alert, "warning");
    const b = nextAlert(a.state, input(10, { now: at(60_000) }));
    assert.equal(b.alert, null);
    const c = nextAlert(b.state, input(19.5, { now: at(120_000) }));
    assert.equal(c.alert, null);
  });

  test("hovering just above the threshold (inside the hysteresis band) neither clears nor re-raises", () => {
    const warned = nextAlert(ok, input(19)).state;
    const hover = nextAlert(warned, input(20.5, { now: at(1000) }));
    assert.equal(hover.alert, null);
    assert.equal(hover.state.level, "warning");
    const back = nextAlert(hover.state, input(19, { now: at(2000) }));
    assert.equal(back.alert, null, "no second warning for the same crossing");
  });

  test("usage back below the threshold clears, and a later crossing warns again", () => {
    const warned = nextAlert(ok, input(19)).state;
    const cleared = nextAlert(warned, input(30, { now: at(1000) }));
    assert.equal(cleared.alert, "cleared");
    assert.equal(cleared.state.level, "ok");
    assert.equal(nextAlert(cleared.state, input(15, { now: at(2000) })).alert, "warning");
  });

  test("a warning that stands for a day is repeated as a daily reminder", () => {
    const warned = nextAlert(ok, input(19)).state;
    assert.equal(nextAlert(warned, input(18, { now: at(23 * 3600_000) })).alert, null);
    const reminded = nextAlert(warned, input(18, { now: at(24 * 3600_000) }));
    assert.equal(reminded.alert, "reminder");
    assert.equal(nextAlert(reminded.state, input(18, { now: at(25 * 3600_000) })).alert, null, "next reminder a day after this one");
  });

  test("a full archive raises one critical alert, even straight from ok", () => {
    const full = nextAlert(ok, input(50, { full: true }));
    assert.equal(full.alert, "critical");
    assert.equal(nextAlert(full.state, input(0, { full: true, now: at(1000) })).alert, null);
    assert.equal(nextAlert(full.state, input(0, { full: true, now: at(24 * 3600_000) })).alert, "reminder");
  });

  test("room again after critical: cleared when well below the threshold, still warning when not", () => {
    const full = nextAlert({ level: "warning", alertedAt: t0 }, input(2, { full: true, now: at(1000) })).state;
    const roomy = nextAlert(full, input(80, { now: at(2000) }));
    assert.equal(roomy.alert, "cleared");
    const tight = nextAlert(full, input(10, { now: at(2000) }));
    assert.equal(tight.alert, null);
    assert.equal(tight.state.level, "warning");
  });
});
