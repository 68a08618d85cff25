import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { buildMailCorpus, tempDir } from "@postroom/testkit";
import { ParsePool } from "./parse-pool.js";

const dir = tempDir("parsepool");
after(() => dir.remove());

/** A 24 MB windows-1251 text body: decoding it to a string is CPU and heap, not Buffers. */
const bigText = Buffer.from(
  "From: ann@customer.example\r\nSubject: long\r\nContent-Type: text/plain; charset=windows-1251\r\n\r\n" + "\xe0\xe1\xe2 a long line of customer text\r\n".repeat(700_000),
  "latin1",
);

async function stage(name: string, raw: Buffer) {
  const folder = join(dir.path, name);
  await mkdir(join(folder, "parts"), { recursive: true });
  await writeFile(join(folder, "message.eml"), raw);
  return { eml: join(folder, "message.eml"), parts: join(folder, "parts") };
}

test("parsing a huge message happens in a worker: the main event loop keeps turning", async () => {
  const { eml, parts } = await stage("big", bigText);
  const pool = new ParsePool({ workers: 1 });
  try {
    // Warm the worker up so the measurement covers parsing, not module loading.
    const small = await stage("small", buildMailCorpus({ bigAttachmentBytes: 0 })[0]!.raw);
    assert.equal((await pool.parse(small.eml, small.parts, 300)).ok, true);
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const outcome = await pool.parse(eml, parts, bigText.length);
    delay.disable();
    assert.equal(outcome.ok, true);
    assert.ok(outcome.ok && outcome.summary.text!.startsWith("абв a long line"), "decoded from windows-1251");
    // Parsed inline, this message blocks the loop for about 2 s on this machine (measured with
    // simpleParser directly); in the worker the loop only sees the summary arrive.
    assert.ok(delay.max / 1e6 < 1000, `event loop blocked for at most ${Math.round(delay.max / 1e6)} ms`);
  } finally {
    await pool.stop();
  }
});

test("a parse cut short by shutdown is reported as stopped, so the archiver retries it instead of blaming the message", async () => {
  const { eml, parts } = await stage("stopping", bigText);
  const pool = new ParsePool({ workers: 1 });
  const pending = pool.parse(eml, parts, bigText.length);
  await new Promise((r) => setTimeout(r, 200));
  await pool.stop();
  const outcome = await pending;
  assert.equal(outcome.ok, false);
  assert.equal(!outcome.ok && outcome.stopped, true);
  const after = await pool.parse(eml, parts, bigText.length);
  assert.equal(!after.ok && after.stopped, true, "a stopped pool takes no new work");
});

/** Paths this process holds open (Linux): what would keep a deleted .eml's disk space in use. */
async function openPaths(): Promise<string[]> {
  const { readdir, readlink } = await import("node:fs/promises");
  const fds = await readdir("/proc/self/fd");
  return (await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")))).filter(Boolean);
}

test("a parse cut off at its time limit leaves no descriptor open on the message, so deleting it frees its space", async () => {
  const { eml, parts } = await stage("cutoff", bigText);
  const pool = new ParsePool({ workers: 1, timeoutMs: 400 });
  try {
    // Warm, so the 400 ms go to reading and parsing the 24 MB message, which takes seconds.
    const small = await stage("small-cutoff", buildMailCorpus({ bigAttachmentBytes: 0 })[0]!.raw);
    assert.equal((await pool.parse(small.eml, small.parts, 300)).ok, true);
    const outcome = await pool.parse(eml, parts, bigText.length);
    assert.equal(!outcome.ok && outcome.timedOut, true, "cut off by the time limit");
    assert.deepEqual((await openPaths()).filter((p) => p.startsWith(dir.path)), [], "nothing under the archive is still open");
  } finally {
    await pool.stop();
  }
});
