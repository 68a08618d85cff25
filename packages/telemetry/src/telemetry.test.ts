import assert from "node:assert/strict";
import { networkInterfaces } from "node:os";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { METRIC_LIST, METRICS, metricOfSeries } from "./catalogue.js";
import { createLogger } from "./logger.js";
import { operationsHost, startTelemetry } from "./telemetry.js";
import { contextFromHeaders, traceHeaders, withSpan } from "./trace.js";

async function get(port: number, path: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, text: await res.text() };
}

/** Sample lines of one series name from a Prometheus text answer. */
function samples(text: string, series: string): { labels: string; value: number }[] {
  const out: { labels: string; value: number }[] = [];
  for (const line of text.split("\n")) {
    const m = /^([a-z_:][a-z0-9_:]*)(\{[^}]*\})? (\S+)/i.exec(line);
    if (m && m[1] === series) out.push({ labels: m[2] ?? "", value: Number(m[3]) });
  }
  return out;
}

test("/metrics serves the catalogue's metrics with bounded labels, and an address never becomes a label", async () => {
  const t = await startTelemetry({ service: "archiver", port: 0, host: "127.0.0.1" });
  try {
    t.metrics.messageFetched("acme", "support", 1234);
    t.metrics.messageFetched("acme", "support", 66);
    t.metrics.messageArchived("acme", "ann@customer.example");
    t.metrics.sessionOffered("acme", "general", new Date(Date.now() - 90_000));
    t.metrics.sessionOffered("acme", "general", new Date(Date.now() - 5_000));
    t.metrics.sendFinished("acme", "support", "failed", "550 mailbox unavailable");
    t.metrics.mailboxStatus({
      tenant: "acme", mailbox: "support", state: "backing-off", backlog: 7,
      lastCheckAt: new Date(Date.now() - 30_000).toISOString(),
      lastError: { code: "AUTHENTICATIONFAILED", at: new Date().toISOString() },
    });
    t.metrics.observeSessions(() => [{ tenant: "acme", queue: "general", state: "offered", count: 2 }]);
    t.metrics.observeConsumers(async () => [{ consumer: "archiver-received", pending: 5, ackPending: 1 }]);

    const { status, text } = await get(t.port!, "/metrics");
    assert.equal(status, 200);
    assert.deepEqual(samples(text, METRICS.messagesFetched.name).map((s) => s.value), [2]);
    assert.match(samples(text, METRICS.messagesFetched.name)[0]!.labels, /service_name="archiver"/);
    assert.deepEqual(samples(text, METRICS.bytesFetched.name).map((s) => s.value), [1300]);
    assert.ok(!text.includes("ann@customer.example"), "an address must never be a label value");
    assert.match(samples(text, METRICS.messagesArchived.name)[0]!.labels, /mailbox="other"/);
    assert.match(samples(text, METRICS.sends.name)[0]!.labels, /reason="other"/, "free text is not a reason code");
    assert.deepEqual(samples(text, `${METRICS.arrivalToOffer.name}_count`).map((s) => s.value), [2]);
    const sum = samples(text, `${METRICS.arrivalToOffer.name}_sum`)[0]!.value;
    assert.ok(sum >= 95 && sum < 100, `arrival-to-offer sum ${sum} is about 95 s`);
    const states = samples(text, METRICS.mailboxState.name);
    assert.equal(states.length, 7, "one series per state");
    assert.deepEqual(states.filter((s) => s.value === 1).map((s) => /state="([^"]+)"/.exec(s.labels)![1]), ["backing-off"]);
    assert.deepEqual(samples(text, METRICS.backlog.name).map((s) => s.value), [7]);
    const age = samples(text, METRICS.lastSuccessAge.name)[0]!.value;
    assert.ok(age >= 29 && age < 60, `last success age ${age} is about 30 s`);
    assert.match(samples(text, METRICS.lastError.name)[0]!.labels, /reason="AUTHENTICATIONFAILED"/);
    assert.deepEqual(samples(text, METRICS.sessions.name).map((s) => s.value), [2]);
    assert.deepEqual(samples(text, METRICS.consumerPending.name).map((s) => s.value), [5]);
    assert.deepEqual(samples(text, METRICS.consumerAckPending.name).map((s) => s.value), [1]);
    for (const line of text.split("\n")) {
      const name = /^(postroom_[a-z0-9_]+)/.exec(line)?.[1];
      if (name) assert.ok(metricOfSeries(name), `${name} is in the catalogue`);
    }
  } finally {
    await t.stop();
  }
});

test("once limited to the configuration, a made-up tenant or mailbox from the bus creates no series of its own", async () => {
  const t = await startTelemetry({ service: "token-service", port: 0, host: "127.0.0.1" });
  try {
    t.metrics.limitLabelsTo([{ id: "acme", mailboxes: [{ id: "support" }] }]);
    t.metrics.tokenAcquired("acme", "support", "password");
    for (let i = 0; i < 20; i++) t.metrics.tokenFailed("acme", `madeup${i}`, "unknown-mailbox");
    t.metrics.tokenFailed("globex", "support", "unknown-mailbox");
    t.metrics.mailboxStatus({ tenant: "acme", mailbox: "forged", state: "idle", backlog: 1, lastCheckAt: null, lastError: null });
    const { text } = await get(t.port!, "/metrics");
    assert.match(samples(text, METRICS.tokenAcquisitions.name)[0]!.labels, /tenant="acme",.*mailbox="support"/);
    const failures = samples(text, METRICS.tokenFailures.name);
    assert.deepEqual(
      failures.map((s) => [/tenant="([^"]*)"/.exec(s.labels)?.[1], /mailbox="([^"]*)"/.exec(s.labels)?.[1], s.value]).sort(),
      [["acme", "unknown", 20], ["unknown", "unknown", 1]],
    );
    assert.ok(!/madeup|forged|globex/.test(text), "no made-up id appears in any label");
  } finally {
    await t.stop();
  }
});

test("by default the operations endpoint listens on loopback only, and /metrics tells nothing about the process", async () => {
  const outside = Object.values(networkInterfaces()).flat().find((a) => a && !a.internal && a.family === "IPv4")?.address;
  assert.ok(outside, "this machine has a non-loopback IPv4 address to try");
  const t = await startTelemetry({ service: "archiver", port: 0 });
  try {
    t.metrics.messageFetched("acme", "support", 1);
    const { status, text } = await get(t.port!, "/metrics");
    assert.equal(status, 200);
    assert.match(text, /postroom_imap_poller_messages_fetched_total\{[^}]*service_name="archiver"/);
    for (const leak of ["target_info", "process_owner", "process_command", "process_executable", "host_name", process.argv[1]!]) {
      assert.ok(!text.includes(leak), `/metrics shows ${leak}`);
    }
    await assert.rejects(fetch(`http://${outside}:${t.port}/healthz`), "not reachable on another interface");
  } finally {
    await t.stop();
  }
  assert.equal(operationsHost({}), "127.0.0.1");
  assert.equal(operationsHost({ POSTROOM_HTTP_HOST: " 0.0.0.0 " }), "0.0.0.0");
  assert.throws(() => operationsHost({ POSTROOM_HTTP_HOST: "0.0.0.0; rm" }), /POSTROOM_HTTP_HOST "0.0.0.0; rm" is not an address: use an IP address or host name/);
});

test("/healthz answers while /readyz follows the registered checks, with a deadline for a hung one", async () => {
  const t = await startTelemetry({ service: "asd-bridge", port: 0, host: "127.0.0.1" });
  try {
    const starting = await get(t.port!, "/readyz");
    assert.equal(starting.status, 503, "no check registered yet: still starting, not ready");
    let natsUp = true;
    t.addReadinessCheck("nats", () => natsUp);
    t.addReadinessCheck("postgres", async () => true);
    assert.equal((await get(t.port!, "/healthz")).status, 200);
    let ready = await get(t.port!, "/readyz");
    assert.equal(ready.status, 200);
    assert.deepEqual(JSON.parse(ready.text).checks, { nats: { ok: true }, postgres: { ok: true } });

    natsUp = false;
    ready = await get(t.port!, "/readyz");
    assert.equal(ready.status, 503);
    assert.equal(JSON.parse(ready.text).checks.nats.ok, false);

    natsUp = true;
    t.addReadinessCheck("postgres", () => new Promise<boolean>(() => undefined));
    const started = Date.now();
    ready = await get(t.port!, "/readyz");
    assert.equal(ready.status, 503);
    assert.match(JSON.parse(ready.text).checks.postgres.problem, /no answer within/);
    assert.ok(Date.now() - started < 10_000, "a hung check does not hang the probe");
    assert.equal((await get(t.port!, "/healthz")).status, 200, "alive even when not ready");
  } finally {
    await t.stop();
  }
});

test("a span's ids appear in the log lines written inside it and travel as a W3C traceparent", async () => {
  const exporter = new InMemorySpanExporter();
  const t = await startTelemetry({ service: "imap-poller", spanExporter: exporter });
  const out = new PassThrough();
  const lines: string[] = [];
  out.on("data", (d: Buffer) => lines.push(...d.toString().split("\n").filter(Boolean)));
  const log = createLogger({ service: "imap-poller", destination: out });
  try {
    let headers: Record<string, string> = {};
    await withSpan("fetch", async () => {
      log.info("fetched");
      headers = traceHeaders();
    });
    await withSpan("archive", async () => log.info("archived"), { parent: contextFromHeaders(headers) });
    log.info("outside");
    await t.flush();
    await new Promise((r) => setImmediate(r));

    const spans = exporter.getFinishedSpans();
    assert.deepEqual(spans.map((s) => s.name), ["fetch", "archive"]);
    const [fetch, archive] = spans;
    assert.equal(archive!.spanContext().traceId, fetch!.spanContext().traceId, "one trace");
    assert.equal(archive!.parentSpanContext?.spanId, fetch!.spanContext().spanId);
    assert.match(headers.traceparent ?? "", new RegExp(`^00-${fetch!.spanContext().traceId}-${fetch!.spanContext().spanId}-01$`));
    assert.equal(fetch!.resource.attributes["service.name"], "imap-poller");

    const [fetched, archived, outside] = lines.map((l) => JSON.parse(l));
    assert.equal(fetched.trace_id, fetch!.spanContext().traceId);
    assert.equal(fetched.span_id, fetch!.spanContext().spanId);
    assert.equal(archived.span_id, archive!.spanContext().spanId);
    assert.equal(outside.trace_id, undefined);
  } finally {
    await t.stop();
  }
});

test("a port in use is a clear start-up error naming the variable to change", async () => {
  const first = await startTelemetry({ service: "a", port: 0, host: "127.0.0.1" });
  try {
    await assert.rejects(startTelemetry({ service: "b", port: first.port!, host: "127.0.0.1" }), /cannot listen on port \d+.*POSTROOM_HTTP_PORT/);
  } finally {
    await first.stop();
  }
});

test("every catalogued metric follows postroom_<component>_<thing>_<unit> with bounded labels", () => {
  const allowed = new Set(["tenant", "mailbox", "queue", "state", "reason", "method", "level", "result", "consumer", "acd", "policy"]);
  for (const m of METRIC_LIST) {
    assert.match(m.name, /^postroom_(imap_poller|token_service|archiver|asd_bridge|smtp_sender|jetstream)_[a-z0-9_]+$/, m.name);
    if (m.kind === "counter") assert.match(m.name, /_total$/, `${m.name}: counters end in _total`);
    if (m.kind === "histogram") assert.match(m.name, /_seconds$/, `${m.name}: histograms here are durations`);
    for (const l of m.labels) assert.ok(allowed.has(l), `${m.name}: label ${l} is not a bounded one`);
  }
  assert.equal(new Set(METRIC_LIST.map((m) => m.name)).size, METRIC_LIST.length, "no name twice");
});
