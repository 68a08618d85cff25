import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, rm } from "node:fs/promises";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { DiskAlert, IngestControl, ingestKey } from "@postroom/contracts";
import { openKv, type KV } from "@postroom/nats-kit";
import { waitFor } from "@postroom/testkit";
import { Harness } from "./test-harness.js";

const run = promisify(execFile);
const MB = 1024 * 1024;

// The archive lives on its own 6 MiB tmpfs, so "the filesystem is full" is real, not simulated.
// Mounting needs root, as the CI machine (scripts/test-env.sh) runs the tests.
let h: Harness;
let control: KV;
let mounted = false;
const alerts: DiskAlert[] = [];

before(async () => {
  if (process.getuid?.() !== 0) throw new Error("this test mounts a tmpfs for the archive and must run as root (as CI does)");
  h = await Harness.create("diskfull");
  await mkdir(h.archiveRoot, { recursive: true });
  await run("mount", ["-t", "tmpfs", "-o", "size=6m", "tmpfs", h.archiveRoot]);
  mounted = true;
  const sub = h.nc.subscribe(h.names.subjects.wildcard.diskAlert());
  void (async () => {
    for await (const m of sub) alerts.push(DiskAlert.parse(m.json()));
  })();
  control = await openKv(h.nc, h.names.buckets.control);
  await h.startArchiver({ disk: { minFreeBytes: 2 * MB, checkIntervalMs: 300, rescanIntervalMs: 300 } });
});

after(async () => {
  await h?.stopArchiver();
  if (mounted) await run("umount", [h.archiveRoot]);
  await h?.close();
});

/** What the archive's filesystem holds when resuming is late: free bytes, what is open and what is on it. */
async function diskReport(): Promise<string> {
  const { readdir, readlink, statfs } = await import("node:fs/promises");
  const fs = await statfs(h.archiveRoot);
  const open = (await Promise.all((await readdir("/proc/self/fd")).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")))).filter((p) => p.startsWith(h.archiveRoot));
  const files = (await readdir(h.archiveRoot, { recursive: true })).slice(0, 40);
  return `filesystem free ${fs.bavail * fs.bsize} bytes; open under the archive: ${JSON.stringify(open)}; files: ${JSON.stringify(files)}; guard: ${JSON.stringify(h.archiver?.stats.disks())}`;
}

function withAttachment(n: number): Buffer {
  const data = randomBytes(MB).toString("base64").replace(/.{76}/g, "$&\r\n");
  return Buffer.from(
    [
      "From: ann@customer.example",
      "To: support@acme.test",
      `Subject: scan ${n}`,
      `Message-ID: <scan-${n}@customer.example>`,
      'Content-Type: multipart/mixed; boundary="b"',
      "",
      "--b",
      "Content-Type: text/plain",
      "",
      "scan attached",
      "--b",
      'Content-Type: application/octet-stream; name="scan.bin"',
      "Content-Transfer-Encoding: base64",
      "",
      data,
      "--b--",
      "",
    ].join("\r\n"),
  );
}

test("when the archive's filesystem cannot take the next message, ingestion pauses with a critical alert and resumes once space is freed", async () => {
  const first = await h.deliver(withAttachment(1), { uid: 1 });
  await waitFor(() => h.confirmations.some((c) => c.messageKey === first), { timeoutMs: 20_000, what: "first archived" });

  const second = await h.deliver(withAttachment(2), { uid: 2 });
  const paused = await waitFor(async () => {
    const e = await control.get(ingestKey("acme", "support"));
    const c = e?.value.length ? IngestControl.parse(e.json()) : undefined;
    return c?.paused ? c : undefined;
  }, { timeoutMs: 20_000, what: "ingestion paused" });
  assert.match(paused.reason ?? "", /archive filesystem almost full: .* free, 2\.0 MiB kept in reserve/);
  const critical = await waitFor(() => alerts.find((a) => a.level === "critical"), { timeoutMs: 30_000, what: "critical alert" });
  assert.equal(critical.quotaBytes, 0, "no quota: the filesystem alone limits this archive");
  assert.ok(critical.filesystemFreeBytes < 4 * MB);
  assert.equal(h.confirmations.some((c) => c.messageKey === second), false, "the second message is not archived");
  assert.equal(await h.count(), 1);

  const [row] = await h.rows<{ archive_path: string }>("SELECT archive_path FROM messages WHERE message_key = $1", [first]);
  await rm(row!.archive_path, { recursive: true, force: true });
  await waitFor(async () => {
    const e = await control.get(ingestKey("acme", "support"));
    return e?.value.length ? !IngestControl.parse(e.json()).paused : false;
  }, { timeoutMs: 20_000, what: "ingestion resumed" }).catch(async (error: unknown) => {
    throw new Error(`${(error as Error).message}\n${await diskReport()}`, { cause: error });
  });
  await waitFor(() => h.confirmations.some((c) => c.messageKey === second), { timeoutMs: 30_000, what: "second archived after space was freed" });
  assert.equal(await h.count(), 2);
});
