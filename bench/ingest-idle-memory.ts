/**
 * Resident memory of one imap-poller holding 1,000 idle IMAP mailboxes (each with its own IDLE
 * connection, cursor, commit consumer and lease), per mailbox: the poller's RSS with 1,000
 * mailboxes minus its RSS with one, divided by 999. The baseline, in the same run: the same count
 * of bare imapflow connections idling in one plain Node process (the floor of "one connection per
 * mailbox"), measured the same way.
 *
 *   node --conditions=source --import tsx bench/ingest-idle-memory.ts [mailboxes=1000]
 *
 * The poller runs as production does (compiled, `pnpm start` flags). Loopback only.
 */
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor } from "@postroom/testkit";
import { buildPoller, IngestWorld, POLLER_NODE_ARGS, type PollerProcess, type WorldMailbox } from "../test/support/ingest-world.js";

const COUNT = Math.max(10, Math.min(2000, Number(process.argv[2] ?? 1000)));
const MB = 1024 * 1024;
const boxes: WorldMailbox[] = Array.from({ length: COUNT }, (_, i) => ({
  id: `m${i}`,
  user: `m${i}@acme.test`,
  password: `pw${i}`,
  tenant: i === 0 ? "solo" : "acme",
  inbound: { checkIntervalSeconds: 300 },
}));

// Dovecot: one imap process per connection (Dovecot's model), so a thousand of them, and
// generous login limits.
const dovecotLimits = `
default_client_limit = ${COUNT * 3 + 100}
default_process_limit = ${COUNT * 2 + 100}
service imap {
  process_limit = ${COUNT + 50}
}
service imap-login {
  client_limit = ${COUNT + 100}
  process_min_avail = 2
  service_count = 0
}
service anvil {
  client_limit = ${COUNT * 3 + 100}
}
mail_max_userip_connections = 20
`;

async function rss(pid: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  return Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024;
}

/** Settled RSS: the lowest of several samples over a few seconds (GC noise removed). */
async function settled(pid: number): Promise<number> {
  let low = Infinity;
  for (let i = 0; i < 10; i++) {
    low = Math.min(low, await rss(pid));
    await new Promise((r) => setTimeout(r, 500));
  }
  return low;
}

await buildPoller();
const w = await IngestWorld.create("bench-idle", boxes, { dovecotConfig: dovecotLimits });
try {
  const idleAll = async (p: PollerProcess, tenantFilter: (b: WorldMailbox) => boolean) =>
    waitFor(
      async () => {
        for (const b of boxes.filter(tenantFilter)) if ((await w.status(b.tenant ?? "acme", b.id))?.state !== "idle") return false;
        return true;
      },
      { timeoutMs: 10 * 60_000, intervalMs: 2000, what: `all idle\n${p.logs.slice(-5).join("\n")}` },
    );

  // One mailbox (tenant "solo"): the poller's own footprint.
  const one = w.startPoller("one", { POSTROOM_TENANTS: "solo" }, { compiled: true, nodeArgs: POLLER_NODE_ARGS });
  await idleAll(one, (b) => b.tenant === "solo");
  const oneRss = await settled(one.pid);
  await one.kill();

  const t0 = Date.now();
  const many = w.startPoller("many", { POSTROOM_TENANTS: "acme" }, { compiled: true, nodeArgs: POLLER_NODE_ARGS });
  await idleAll(many, (b) => b.tenant !== "solo");
  const startS = (Date.now() - t0) / 1000;
  const manyRss = await settled(many.pid);
  const n = COUNT - 1;
  const perPoller = (manyRss - oneRss) / (n - 1);

  // Baseline: bare imapflow connections, idling, in one plain Node process.
  const script = join(w.dir.path, "bare.mjs");
  await writeFile(
    script,
    `import { ImapFlow } from ${JSON.stringify(import.meta.resolve("imapflow"))};
const n = Number(process.argv[2]);
const clients = [];
for (let i = 0; i < n; i++) {
  const c = new ImapFlow({ host: "127.0.0.1", port: ${w.dovecot.info.imapPort}, secure: false, doSTARTTLS: false, auth: { user: "m" + (i + 1) + "@acme.test", pass: "pw" + (i + 1) }, logger: false, autoIdleDelay: 250 });
  await c.connect();
  await c.mailboxOpen("INBOX");
  clients.push(c);
}
process.stdout.write("ready\\n");
setInterval(() => {}, 1 << 30);
`,
  );
  const bareRss = async (count: number) => {
    const child = spawn(process.execPath, [...POLLER_NODE_ARGS, script, String(count)], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve) => child.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve()));
    const r = await settled(child.pid!);
    child.kill();
    return r;
  };
  await many.kill();
  const bareOne = await bareRss(1);
  const bareMany = await bareRss(n);
  const perBare = (bareMany - bareOne) / (n - 1);

  console.log(`imap-poller with 1 mailbox: ${(oneRss / MB).toFixed(1)} MB RSS; with ${n} idle mailboxes: ${(manyRss / MB).toFixed(1)} MB (all idle ${startS.toFixed(0)} s after start)`);
  console.log(`  per mailbox: ${(perPoller / 1024).toFixed(1)} KB`);
  console.log(`bare imapflow, 1 connection: ${(bareOne / MB).toFixed(1)} MB; ${n} idle connections: ${(bareMany / MB).toFixed(1)} MB`);
  console.log(`  per connection: ${(perBare / 1024).toFixed(1)} KB`);
  console.log(`ratio Postroom / bare connection, per mailbox: ${(perPoller / perBare).toFixed(2)}`);
} finally {
  await w.close();
}
