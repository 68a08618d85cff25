import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { trace } from "@opentelemetry/api";
import { names as namesOf, streamDefinitions } from "@postroom/contracts";
import { z } from "zod";
import { InMemorySpanExporter, METRICS, startTelemetry, withSpan, type Telemetry } from "@postroom/telemetry";
import { connectNats, DurableConsumer, ensureStreams, jetStreamOf, onPublished, publishJson, type NatsConnection } from "./index.js";

// Real NATS (JetStream) on the test machine; this file's own namespace, deleted afterwards.
const names = namesOf(`tnatskit${randomBytes(5).toString("hex")}`);
const exporter = new InMemorySpanExporter();
let nc: NatsConnection;
let telemetry: Telemetry;

before(async () => {
  telemetry = await startTelemetry({ service: "nats-kit-test", port: 0, host: "127.0.0.1", spanExporter: exporter });
  nc = await connectNats({ url: process.env.NATS_URL ?? "nats://127.0.0.1:4222", name: "nats-kit-trace-test" });
  await ensureStreams(nc, streamDefinitions(names));
});

after(async () => {
  const jsm = await jetstreamManager(nc);
  for (const d of streamDefinitions(names)) await jsm.streams.delete(d.name).catch(() => undefined);
  await nc.drain();
  await telemetry.stop();
});

// The payload shape does not matter here; the consumer only needs a schema to parse it with.
const Event = z.object({ version: z.literal("v1"), key: z.string() });
const event = (key: string) => ({ version: "v1", key });

test("a consumer's handler runs inside a span of the publisher's trace, and its own publishes join that trace", async () => {
  const seen: { traceId: string | undefined }[] = [];
  const consumer = new DurableConsumer({
    nc,
    stream: names.streams.mail,
    durable: names.consumers.asdBridgeArchived("acme"),
    filterSubject: names.subjects.wildcard.mailArchived("acme"),
    schema: Event,
    handler: async (payload) => {
      seen.push({ traceId: trace.getActiveSpan()?.spanContext().traceId });
      // A publish from inside the handler continues the same trace.
      await publishJson(jetStreamOf(nc), names.subjects.mailSend("acme", "support"), { version: "v1" }, { msgId: `send-${payload.key}` });
      return { action: "ack" };
    },
  });
  await consumer.start();
  try {
    let rootTrace = "";
    await withSpan("fetch", async (span) => {
      rootTrace = span.spanContext().traceId;
      await publishJson(jetStreamOf(nc), names.subjects.mailArchived("acme", "support"), event("k1"), { msgId: "k1" });
    });
    const deadline = Date.now() + 15_000;
    while (seen.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(seen[0]?.traceId, rootTrace, "the handler sees the publisher's trace");

    // The consumer's span ends after the handler returned and the ack was confirmed.
    const processName = `process ${names.consumers.asdBridgeArchived("acme")}`;
    const traceSpans = () => exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === rootTrace);
    while (!traceSpans().some((s) => s.name === processName) && Date.now() < deadline) {
      await telemetry.flush();
      await new Promise((r) => setTimeout(r, 50));
    }
    const spans = traceSpans();
    const byName = (n: string) => spans.filter((s) => s.name === n);
    assert.equal(byName("fetch").length, 1);
    assert.equal(byName("publish").length, 2, "the event and the handler's command");
    const processSpan = byName(processName)[0];
    assert.ok(processSpan, "the consumer's span is in the trace");
    const firstPublish = byName("publish").find((s) => s.attributes["messaging.message.id"] === "k1")!;
    assert.equal(processSpan.parentSpanContext?.spanId, firstPublish.spanContext().spanId, "consumer span is a child of the publish");
    const secondPublish = byName("publish").find((s) => s.attributes["messaging.message.id"] === "send-k1")!;
    assert.equal(secondPublish.parentSpanContext?.spanId, processSpan.spanContext().spanId);

    // RED: the handled counter and the duration histogram, as Prometheus scrapes them.
    const text = await (await fetch(`http://127.0.0.1:${telemetry.port}/metrics`)).text();
    assert.match(text, new RegExp(`${METRICS.handled.name}\\{[^}]*consumer="${names.consumers.asdBridgeArchived("acme")}"[^}]*result="ack"[^}]*\\} 1`));
    assert.match(text, new RegExp(`${METRICS.handleDuration.name}_count\\{[^}]*\\} 1`));
    const lag = await consumer.lag();
    assert.deepEqual(lag, { consumer: names.consumers.asdBridgeArchived("acme"), pending: 0, ackPending: 0 });
  } finally {
    await consumer.stop();
  }
});

test("a traceparent given by the caller is sent as is, so a reply can continue the email's trace later", async () => {
  const given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  const js = jetStreamOf(nc);
  await publishJson(js, names.subjects.mailArchived("acme", "other"), event("k2"), { msgId: "k2", headers: { traceparent: given } });
  const jsm = await jetstreamManager(nc);
  const stored = await jsm.streams.getMessage(names.streams.mail, { last_by_subj: names.subjects.mailArchived("acme", "other") });
  assert.equal(stored?.header.get("traceparent"), given);
});

test("a publish listener hears each stored event once; a republished message id is not heard again", async () => {
  const heard: string[] = [];
  const stop = onPublished((subject, payload) => heard.push(`${subject} ${(payload as { key: string }).key}`));
  try {
    const js = jetStreamOf(nc);
    const subject = names.subjects.mailArchived("acme", "listener");
    await publishJson(js, subject, event("k3"), { msgId: "k3" });
    await publishJson(js, subject, event("k3"), { msgId: "k3" });
    await publishJson(js, subject, event("k4"), { msgId: "k4" });
    assert.deepEqual(heard, [`${subject} k3`, `${subject} k4`]);
  } finally {
    stop();
  }
  await publishJson(jetStreamOf(nc), names.subjects.mailArchived("acme", "listener"), event("k5"), { msgId: "k5" });
  assert.equal(heard.length, 2, "a removed listener hears nothing");
});
