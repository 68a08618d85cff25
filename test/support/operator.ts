import { spawn } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { DovecotServer } from "@postroom/testkit";
import { OBSERVER } from "./secure-bus.js";
import type { WorldSecurity } from "./secure.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const CLI = join(ROOT, "packages", "cli", "src", "main.ts");

/** On a secure bus the operator's commands connect as a user of their own: the tests' observer. */
export function operatorEnv(security: WorldSecurity): Record<string, string> {
  const bus = security.bus;
  return bus ? { NATS_USER: OBSERVER, NATS_PASSWORD: bus.passwords[OBSERVER]! } : {};
}

/** Runs the postroom command from the sources; resolves with its exit code and output. */
export function runPostroom(args: string[], env: Record<string, string>, onOutput?: (text: string) => void): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", CLI, ...args], { cwd: ROOT, env: { ...process.env, ...env, POSTROOM_CONFIG: "" }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString("utf8");
      onOutput?.(out);
    });
    child.stderr.on("data", (d: Buffer) => (err += d.toString("utf8")));
    child.once("exit", (code) => resolvePromise({ code: code ?? -1, out, err }));
  });
}

/** The subjects of every message in a Dovecot user's INBOX. */
export async function inboxSubjects(dovecot: DovecotServer, user: string): Promise<string[]> {
  return dovecot.withImap(user, async (client) => {
    const lock = await client.getMailboxLock("INBOX");
    try {
      if (client.mailbox === false || client.mailbox.exists === 0) return [];
      return (await client.fetchAll("1:*", { envelope: true })).map((m) => m.envelope?.subject ?? "");
    } finally {
      lock.release();
    }
  });
}

/** Every regular file under `dir`. */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(p)));
    else if (entry.isFile()) out.push(p);
  }
  return out;
}

/**
 * The files under `roots` (up to 64 MB each) that hold any of `needles` in clear, and how many
 * files were read.
 */
export async function filesHolding(roots: string[], needles: string[]): Promise<{ found: string[]; scanned: number }> {
  const bytes = needles.map((n) => Buffer.from(n));
  const found: string[] = [];
  let scanned = 0;
  for (const root of roots) {
    for (const file of await filesUnder(root)) {
      const size = (await stat(file).catch(() => undefined))?.size ?? 0;
      if (size === 0 || size > 64 * 1024 * 1024) continue;
      const data = await readFile(file).catch(() => undefined);
      if (!data) continue;
      scanned++;
      if (bytes.some((b) => data.includes(b))) found.push(file);
    }
  }
  return { found, scanned };
}

/**
 * The JetStream folders of this run's streams on the local nats-server, when its store is where
 * scripts/test-env.sh puts it (none otherwise).
 */
export async function jetStreamFolders(namespace: string): Promise<string[]> {
  const streams = "/var/lib/nats-server/jetstream/$G/streams";
  return (await readdir(streams).catch(() => [] as string[])).filter((d) => d.includes(namespace)).map((d) => join(streams, d));
}
