import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { names as namesOf, streamDefinitions } from "@postroom/contracts";
import { connectNats, ensureStreams, jetStreamOf, publishJson, type NatsConnection } from "@postroom/nats-kit";
import { createLogger, METRICS, startTelemetry, type Telemetry } from "@postroom/telemetry";
import { recordEmittedEvents } from "./observe.js";

// Real NATS on the test machine; this file's own namespace, deleted afterwards.
const names = namesOf(`truntime${randomBytes(5).toString("hex")}`);
let nc: NatsConnection;
let telemetry: Telemetry;
let stopRecording: () => void;

before(async () => {
  telemetry = await startTelemetry({ service: "archiver", port: 0, host: "127.0.0.1" });
  nc = await connectNats({ url: process.env.NATS_URL ?? "nats://127.0.0.1:4222", name: "runtime-observe-test" });
  await ensureStreams(nc, streamDefinitions(names));
  stopRecording = recordEmittedEvents({ telemetry, names, logger: createLogger({ service: "t", level: "silent" }) });
});

after(async () => {
  stopRecording();
  // JetStream's own API (this package does not depend on the JetStream client).
  for (const d of streamDefinitions(names)) await nc.request(`$JS.API.STREAM.DELETE.${d.name}`).catch(() => undefined);
  await nc.drain();
  await telemetry.stop();
});

async function metricsText(): Promise<string> {
  return (await fetch(`http://127.0.0.1:${telemetry.port}/metrics`)).text();
}

function value(text: string, series: string, labels: RegExp = /.*/): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{[^}]*\})? (\S+)/.exec(line);
    if (m && m[1] === series && labels.test(m[2] ?? "")) return Number(m[3]);
  }
  return undefined;
}

test("a stored disk alert sets the archive gauges and counts the alert once, even when republished", async () => {
  const js = jetStreamOf(nc);
  const alert = {
    version: "v1", tenant: "acme", mailbox: "support", level: "warning", archivePath: "/archive/acme",
    usedBytes: 800, quotaBytes: 1000, filesystemFreeBytes: 5000, percentLeft: 20, raisedAt: new Date().toISOString(),
  };
  await publishJson(js, names.subjects.diskAlert("acme", "support"), alert, { msgId: "alert-1" });
  await publishJson(js, names.subjects.diskAlert("acme", "support"), alert, { msgId: "alert-1" });
  await publishJson(js, names.subjects.diskAlert("acme", "support"), { ...alert, level: "cleared", usedBytes: 100 }, { msgId: "alert-2" });
  const text = await metricsText();
  assert.equal(value(text, METRICS.alertsRaised.name, /level="warning"/), 1, "one warning, not two");
  assert.equal(value(text, METRICS.alertsRaised.name, /level="cleared"/), undefined, "a cleared alert is not an alert raised");
  assert.equal(value(text, METRICS.archiveUsed.name, /tenant="acme"/), 100, "usage follows the latest event");
  assert.equal(value(text, METRICS.archiveQuota.name, /tenant="acme"/), 1000);
  assert.equal(value(text, METRICS.filesystemFree.name, /tenant="acme"/), 5000);
});

test("sent and failed replies are counted by result with the reply code as reason, never the server's text", async () => {
  const js = jetStreamOf(nc);
  const failed = { version: "v1", commandId: "c-1", tenant: "acme", mailbox: "support", permanent: true, reason: "550 5.1.1 <bob@x.example>: no such user", serverResponse: "550 5.1.1 no such user", responseCode: 550, failedAt: new Date().toISOString() };
  await publishJson(js, names.subjects.mailSendFailed("acme", "support"), failed, { msgId: "failed-c-1" });
  await publishJson(js, names.subjects.mailSendFailed("acme", "support"), { ...failed, commandId: "c-2", permanent: false, responseCode: null }, { msgId: "failed-c-2" });
  const text = await metricsText();
  assert.equal(value(text, METRICS.sends.name, /reason="550".*result="failed"|result="failed".*reason="550"/), 1);
  assert.equal(value(text, METRICS.sends.name, /result="retried"/), 1);
  assert.ok(!text.includes("bob@x.example"), "no address from the server's answer");
});

test("an agent taking a session records the offer-to-agent time; without a database it falls back to zero", async () => {
  const assignedAt = new Date().toISOString();
  await publishJson(jetStreamOf(nc), names.subjects.sessionAssigned("acme", "support"), { version: "v1", sessionId: "s-1", tenant: "acme", mailbox: "support", queue: "email", agent: "ann", assignedAt }, { msgId: "assigned-s-1" });
  // The histogram is recorded after an (absent) database lookup: poll briefly.
  let text = "";
  for (let i = 0; i < 50 && value(text, `${METRICS.offerToAgent.name}_count`) === undefined; i++) {
    await new Promise((r) => setTimeout(r, 20));
    text = await metricsText();
  }
  assert.equal(value(text, `${METRICS.offerToAgent.name}_count`, /queue="email"/), 1);
  assert.equal(value(text, `${METRICS.offerToAgent.name}_sum`, /queue="email"/), 0);
});
