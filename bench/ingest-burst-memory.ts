/**
 * Peak resident memory while a 57 MB message is ingested and archived in the middle of a burst of
 * 1,000 small ones: the compiled imap-poller (as production runs it, `start`'s node flags) and
 * the archiver (a process, as `postroom up` runs it), each read from /proc/<pid>/status VmHWM
 * (the kernel's high-water mark, so no peak between two samples is missed). Targets: archiver
 * ≤ 256 MB, poller ≤ 160 MB.
 *
 *   node --conditions=source --import tsx bench/ingest-burst-memory.ts [small=1000] [bigMB=57]
 *
 * Loopback only; everything it starts is stopped and removed at the end.
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { customerEmail } from "../test/support/mail.js";
import { buildPoller, IngestWorld, POLLER_NODE_ARGS } from "../test/support/ingest-world.js";

const run = promisify(execFile);
const SMALL = Math.max(10, Math.min(5000, Number(process.argv[2] ?? 1000)));
const BIG_MB = Math.max(1, Math.min(100, Number(process.argv[3] ?? 57)));
const USER = "burst@acme.test";
const MB = 1024 * 1024;

async function peakBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

/** A message with one base64 attachment of about `mb` megabytes. */
function bigMessage(mb: number): Buffer {
  const payload = Buffer.alloc(Math.floor((mb * MB * 3) / 4));
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 2654435761) >>> 24;
  const b64 = payload.toString("base64").replace(/.{76}/g, "$&\r\n");
  return Buffer.from(
    [
      "From: Big Sender <big@customer.example>",
      `To: ${USER}`,
      "Subject: the big one",
      "Message-ID: <big-1@customer.example>",
      "MIME-Version: 1.0",
      'Content-Type: multipart/mixed; boundary="b"',
      "",
      "--b",
      "Content-Type: text/plain; charset=utf-8",
      "",
      "Scans attached.",
      "--b",
      'Content-Type: application/octet-stream; name="scan.bin"',
      "Content-Transfer-Encoding: base64",
      'Content-Disposition: attachment; filename="scan.bin"',
      "",
      b64,
      "--b--",
      "",
    ].join("\r\n"),
  );
}

await buildPoller();
const w = await IngestWorld.create("bench-burst", [
  { id: "burst", user: USER, password: "bench-pw", inbound: { checkIntervalSeconds: 60, firstStart: "from-now", afterImport: { action: "none" } } },
], {
  tweak: (c) => {
    for (const t of c.tenants ?? []) (t as { classification?: unknown }).classification = { loopBreaker: { maxMessages: 1_000_000, windowMinutes: 1 } };
  },
});
try {
  const poller = w.startPoller("burst", {}, { compiled: true, nodeArgs: POLLER_NODE_ARGS });
  let exited = false;
  void poller.exited.then(() => (exited = true));
  await w.waitForState("acme", "burst", "idle", 120_000);
  const big = bigMessage(BIG_MB);
  const archiverPid = w.system.pid("archiver")!;
  const before = { poller: await peakBytes(poller.pid), archiver: await peakBytes(archiverPid) };
  // The burst: half the small ones, the big one, the other half, on one IMAP connection while the poller runs.
  await w.dovecot.withImap(USER, async (client) => {
    for (let i = 0; i < SMALL; i++) {
      if (i === Math.floor(SMALL / 2)) await client.append("INBOX", big);
      await client.append("INBOX", customerEmail({ to: USER, subject: `burst ${i}`, body: `Message ${i}.\r\n${"Lorem ipsum dolor sit amet. ".repeat(1 + (i % 40))}` }));
    }
  });
  const t0 = Date.now();
  for (;;) {
    const n = await w.count("SELECT count(*) AS n FROM messages");
    if (n >= SMALL + 1) break;
    if (Date.now() - t0 > 20 * 60_000) throw new Error(`only ${n} of ${SMALL + 1} archived after 20 minutes`);
    if (exited) throw new Error(`the poller exited with ${n} of ${SMALL + 1} archived:\n${poller.logs.slice(-30).join("\n")}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  const peak = { poller: await peakBytes(poller.pid), archiver: await peakBytes(archiverPid) };
  const size = await w.count("SELECT max(size) AS n FROM messages");
  await poller.kill();
  const { stdout: load } = await run("uptime");
  console.log(`burst: ${SMALL} small messages and one of ${(size / MB).toFixed(1)} MB, all archived`);
  console.log(`peak RSS imap-poller (compiled, ${POLLER_NODE_ARGS.join(" ")}): ${(peak.poller / MB).toFixed(0)} MB (before the burst ${(before.poller / MB).toFixed(0)} MB; target ≤ 160 MB)`);
  console.log(`peak RSS archiver (tsx, as the e2e system runs it): ${(peak.archiver / MB).toFixed(0)} MB (before the burst ${(before.archiver / MB).toFixed(0)} MB; target ≤ 256 MB)`);
  console.log(`load: ${load.trim()}`);
} finally {
  await w.close();
}
