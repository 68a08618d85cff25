import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { waitFor } from "@postroom/testkit";
import { htmlAsText } from "./html.js";
import { HtmlPool } from "./html-pool.js";
import { BridgeHarness, call, mailbox } from "./test-harness.js";

/** The two bodies that froze the agent API: sanitize-html took 7-10 s and 3-4 s on them in the request handler. */
const UNCLOSED_B = `<p>Dear support,</p>${"<b>".repeat(100_000)}my order is late`;
const TABLE = `<table>${Array.from({ length: 1000 }, (_, r) => `<tr>${Array.from({ length: 20 }, (_, c) => `<td>r${r}c${c}</td>`).join("")}</tr>`).join("")}</table>`;

let h: BridgeHarness;

before(async () => {
  h = await BridgeHarness.create(
    "htmlpool",
    () => ({
      tenants: [
        {
          id: "acme",
          agents: [{ id: "ann", password: "env:ANN_PW", queues: ["email"], maxSessions: 20 }],
          mailboxes: [mailbox("support", "acme")],
        },
      ],
    }),
    { ANN_PW: "ann-html-pw" },
  );
  await h.bridge.start();
});

after(async () => {
  await h?.close();
});

test("ten concurrent views of the heaviest bodies keep the agent API answering other requests (never a sanitiser's seconds); each view ends within its budget with the text and a notice", async (t) => {
  const api = h.bridge.api!.url;
  const token = (await call(api, "POST", "/api/login", undefined, { tenant: "acme", agent: "ann", password: "ann-html-pw" })).body.token as string;
  await call(api, "POST", "/api/queues/login", token, { queues: ["email"] });
  const delivered = [];
  for (let i = 0; i < 10; i++) delivered.push(await h.deliver("acme", "support", { subject: `heavy ${i}`, html: i % 2 ? TABLE : UNCLOSED_B, text: i % 2 ? null : "my order is late (text part)" }));
  const sessions = await waitFor(async () => {
    const r = await call(api, "GET", "/api/sessions", token);
    const list = r.body.sessions as { id: string }[];
    return list.length === 10 ? list : undefined;
  }, { timeoutMs: 20_000, what: "ten sessions assigned" });

  let viewing = true;
  const probe = async (into: number[], until: () => boolean) => {
    while (until()) {
      const started = performance.now();
      const r = await call(api, "GET", "/api/me", token);
      into.push(performance.now() - started);
      assert.equal(r.status, 200);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  // The same probe for a second before, as the yardstick of what this machine gives right now.
  const baseline: number[] = [];
  const baselineEnd = performance.now() + 1000;
  await probe(baseline, () => performance.now() < baselineEnd);
  const latencies: number[] = [];
  const prober = probe(latencies, () => viewing);
  const viewStarted = performance.now();
  const views = await Promise.all(
    sessions.map(async (s) => {
      const r = await call(api, "GET", `/api/sessions/${s.id}`, token);
      return { ms: performance.now() - viewStarted, email: r.body.email as { html: string | null; htmlNotice: string | null; text: string; subject: string } };
    }),
  );
  viewing = false;
  await prober;

  const budget = h.bridge.api!.htmlLimits.timeoutMs;
  const slowestView = Math.max(...views.map((v) => v.ms));
  const stats = (list: number[]) => {
    const sorted = [...list].sort((a, b) => a - b);
    return { n: sorted.length, median: sorted[sorted.length >> 1]!, p95: sorted[Math.floor(sorted.length * 0.95)]!, max: sorted.at(-1)! };
  };
  const before = stats(baseline);
  const during = stats(latencies);
  const f = (x: number) => x.toFixed(1);
  t.diagnostic(`other requests before: ${before.n}, median ${f(before.median)} ms, p95 ${f(before.p95)} ms, slowest ${f(before.max)} ms`);
  t.diagnostic(`other requests while 10 heavy views were in flight: ${during.n} answered, median ${f(during.median)} ms, p95 ${f(during.p95)} ms, slowest ${f(during.max)} ms; slowest heavy view ${slowestView.toFixed(0)} ms (budget ${budget} ms)`);
  assert.ok(during.n >= 10, `the API was probed throughout (${during.n} requests)`);
  // Sanitising inside the handler froze every request for 3-10 s per body, so one body done on
  // the event loop makes some probe wait at least 3 s. Off the loop, the probes wait only for a
  // core: on two cores shared with the parser threads and other processes that was up to ~750 ms
  // at a load of 10 (a CI run beside). The bounds sit between the two, and rise with what the
  // quiet second before showed this machine gives right now.
  const allowed = Math.max(1000, 3 * before.p95);
  assert.ok(during.p95 < allowed, `other requests answered within ${f(allowed)} ms (p95 ${f(during.p95)} ms; before ${f(before.p95)} ms)`);
  assert.ok(during.max < Math.max(2000, 3 * before.max), `none waited for a sanitiser (slowest ${f(during.max)} ms; before ${f(before.max)} ms)`);
  // Each view is either sanitised HTML (done within the budget) or, beyond it, the text with a notice.
  for (const v of views) {
    if (v.email.html !== null) assert.ok(v.email.htmlNotice === null && !/<script|onclick/i.test(v.email.html), "sanitised HTML");
    else assert.match(v.email.htmlNotice ?? "", /took longer than \d+ ms to make safe; this is its text/);
  }
  const asText = views.filter((v) => v.email.html === null);
  t.diagnostic(`${views.length - asText.length} heavy views shown as sanitised HTML, ${asText.length} as text with a notice`);
  assert.ok(asText.length > 0, "the 100,000 unclosed <b> do not fit the budget");
  for (const v of asText) {
    if (/heavy [02468]/.test(v.email.subject)) assert.equal(v.email.text, "my order is late (text part)", "the email's own text part when it has one");
    else assert.ok(v.email.text.startsWith("r0c0\tr0c1\t"), "else a text rendering of the HTML");
  }
  const textBudget = h.bridge.api!.htmlLimits.textTimeoutMs;
  assert.ok(slowestView < budget + textBudget + 1000, `each view ends within its budget (${budget} + ${textBudget} ms for the text rendering), queueing included, give or take the scheduler (slowest ${slowestView.toFixed(0)} ms)`);
});

test("a normal body is sanitised in the pool, a second view of it comes from the cache, and one over the size limit is not sanitised at all", async () => {
  const pool = new HtmlPool({ workers: 1, timeoutMs: 10_000, maxBytes: 1000 });
  try {
    const first = await pool.render("m1:a", `<p onclick="x()">Hi <img src="cid:logo"></p><script>alert(1)</script>`, { logo: "/api/sessions/s/attachments/1" });
    assert.deepEqual(first, { html: `<p>Hi <img src="/api/sessions/s/attachments/1" /></p>`, notice: null, text: null });
    assert.equal(await pool.render("m1:a", "ignored: same key", {}), first);
    assert.equal(pool.stats.cacheHits, 1);
    const big = await pool.render("m2:a", `<p>${"x".repeat(2000)}</p>`, {});
    assert.equal(big.html, null);
    assert.match(big.notice!, /over the 1000-byte limit/);
  } finally {
    await pool.stop();
  }
});

test("a body over its time budget ends with a notice and the text rendering made beside it, and a replaced thread sanitises the next body", async () => {
  const pool = new HtmlPool({ workers: 1, timeoutMs: 300, maxBytes: 400_000 });
  let n = 0;
  // Threads load TypeScript through tsx here, which can take longer than this short budget:
  // wait until both have loaded (an over-size body only needs the text thread).
  const ready = async (what: string, html: string, ok: (o: Awaited<ReturnType<HtmlPool["render"]>>) => boolean) =>
    waitFor(async () => ok(await pool.render(`warm-${n++}`, html, {}, true)), { timeoutMs: 20_000, intervalMs: 100, what });
  try {
    await ready("the text thread loaded", `<p>${"x".repeat(500_000)}</p>`, (o) => o.text !== null);
    await ready("the sanitiser loaded", "<b>fine</b>", (o) => o.html === "<b>fine</b>");
    const heavy = await pool.render("heavy", UNCLOSED_B, {}, true);
    assert.match(heavy.notice ?? "", /took longer than 300 ms/);
    assert.equal(heavy.text, "Dear support,\nmy order is late", "with the text rendering made beside it");
    await ready("the replacement sanitiser at work", "<i>next</i>", (o) => o.html === "<i>next</i>");
    assert.ok(pool.stats.overTime >= 1);
  } finally {
    await pool.stop();
  }
});

test("the text rendering is linear on hostile input: unclosed scripts, unclosed tags, long runs of spaces", () => {
  const started = performance.now();
  assert.equal(htmlAsText("<style>p{}</style><p>Hello&nbsp;<b>Ann</b></p><div>order&amp;co</div><script>x</script>"), "Hello Ann\norder&co");
  for (const hostile of ["<script>".repeat(100_000), "<a ".repeat(300_000), " ".repeat(1_000_000) + "x", UNCLOSED_B, `<head>${"<title>".repeat(50_000)}`]) htmlAsText(hostile);
  assert.ok(performance.now() - started < 2000, `${(performance.now() - started).toFixed(0)} ms for five hostile bodies`);
  assert.match(htmlAsText("x".repeat(20), 10), /^x{10}\n\[…\]$/, "bounded, and says so");
});
