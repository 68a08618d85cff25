import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, lstatSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import pg from "pg";
import type { Page } from "playwright-core";
import { cleanupNamespace, createTestDatabase, freePort, natsUrl, tempDir, testNamespace, waitFor, type TempDir, type TestDatabase } from "@postroom/testkit";
import { launchChromium } from "../support/browser.js";

/**
 * The first hour: the README's run command (`bash scripts/up.sh`) starts `postroom demo` — local
 * Dovecot and Postfix, the five services, seeded customer emails — and a newcomer can log in with
 * the printed password, see the emails, reply, and find the reply in the customer's mailbox.
 * One demo start is shared by every assertion, in the order a person would try them.
 *
 * Plain servers even in secure mode (POSTROOM_E2E_SECURE=1): what this proves is a newcomer's first
 * hour, whose NATS and PostgreSQL are the local ones with no users and no TLS (the demo takes only
 * DATABASE_URL and NATS_URL); the secure set-up is the deployed one, which the other files run.
 */
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SEEDED = ["Where is my order #10427?", "Damaged parcel - photo and invoice attached", "Change of delivery address", "Quote for 40 office chairs"];

let dataDir: TempDir;
let db: TestDatabase;
let namespace: string;
let desktopPort: number;
let demo: ChildProcess;
let demoExit: Promise<number | null>;
let stdout = "";
let chromium: Awaited<ReturnType<typeof launchChromium>>;
let page: Page;
let pool: pg.Pool;

/** The environment a newcomer has: no Postroom variables; the test only isolates database and namespace. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of ["POSTROOM_CONFIG", "NATS_URL", "DATABASE_URL", "POSTROOM_NAMESPACE", "NODE_EXTRA_CA_CERTS"]) delete env[name];
  return { ...env, NO_COLOR: "1", ...extra };
}

/** Runs a `postroom` command from the repository root the way the README writes it (`pnpm postroom …`). */
function postroom(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn("pnpm", ["postroom", ...args], { cwd: ROOT, env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (err += c.toString("utf8")));
    child.on("close", (code) => resolve({ code, out, err }));
  });
}

before(async () => {
  dataDir = tempDir("demo");
  db = await createTestDatabase("demo");
  namespace = testNamespace("demo");
  desktopPort = await freePort();
  pool = new pg.Pool({ connectionString: db.url, max: 2 });
  demo = spawn("bash", ["scripts/up.sh", "--data-dir", join(dataDir.path, "demo"), "--port", String(desktopPort)], {
    cwd: ROOT,
    env: cleanEnv({ DATABASE_URL: db.url, NATS_URL: natsUrl(), POSTROOM_NAMESPACE: namespace }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  demo.stdout!.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  demo.stderr!.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  demoExit = new Promise((resolve) => demo.on("close", (code) => resolve(code)));
  chromium = await launchChromium("demo");
  page = await chromium.browser.newPage();
});

after(async () => {
  await chromium?.close();
  if (demo && demo.exitCode === null) {
    demo.kill("SIGINT");
    const killer = setTimeout(() => demo.kill("SIGKILL"), 20_000);
    await demoExit;
    clearTimeout(killer);
  }
  await pool?.end();
  await db?.drop();
  // Under a 0700 temp folder the demo keeps Dovecot's and Postfix's files in /var/lib/postroom-demo.
  const link = join(dataDir.path, "demo", "dovecot");
  if (existsSync(link) && lstatSync(link).isSymbolicLink()) rmSync(dirname(readlinkSync(link)), { recursive: true, force: true });
  await cleanupNamespace(natsUrl(), namespace);
  await dataDir?.remove();
});

/** Runs `fn`; a failure carries the end of the demo's output, which says why. */
async function withOutput<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw new Error(`${(error as Error).message}\n--- demo output (end):\n${stdout.slice(-5000)}`, { cause: error });
  }
}

async function sessionSubjects(): Promise<string[]> {
  const r = await pool.query<{ subject: string }>("SELECT m.subject FROM sessions s JOIN messages m ON m.id = s.message_id ORDER BY m.subject").catch(() => ({ rows: [] }));
  return r.rows.map((x) => x.subject);
}

test("the README's run command starts the demo: the seeded emails become sessions, the auto-reply does not, and the box prints the logins", { timeout: 150_000 }, async () => {
  const subjects = await withOutput(() =>
    waitFor(async () => {
      const s = await sessionSubjects();
      return s.length >= 6 ? s : undefined;
    }, { timeoutMs: 90_000, intervalMs: 500, what: "six sessions from the seeded emails" }),
  );
  for (const subject of SEEDED) assert.ok(subjects.includes(subject), `a session for "${subject}" (have ${subjects.join(" | ")})`);
  assert.equal(subjects.filter((s) => s === "Re: Change of delivery address").length, 2, "both later messages of the thread");
  const auto = await pool.query("SELECT 1 FROM messages WHERE subject = 'Automatic reply: Out of office'");
  assert.equal(auto.rowCount, 1, "the auto-reply is archived");
  assert.ok(!subjects.includes("Automatic reply: Out of office"), "and not offered");
  const thread = await pool.query<{ n: string }>("SELECT count(DISTINCT conversation_id) AS n FROM messages WHERE subject LIKE '%Change of delivery address'");
  assert.equal(thread.rows[0]!.n, "1", "the three thread messages share one conversation");

  await withOutput(() => waitFor(() => stdout.includes("Postroom demo is running"), { timeoutMs: 30_000, what: "the demo's box" }));
  assert.match(stdout, /Dovecot and Postfix keep their files in \/var\/lib\/postroom-demo\/\w+: their users \(nobody, postfix\) cannot enter /, "a 0700 parent folder is worked around");
  const env = readFileSync(join(dataDir.path, "demo", "postroom.env"), "utf8");
  const annPassword = /^DEMO_ANN_PASSWORD=(\S+)$/m.exec(env)?.[1];
  assert.ok(annPassword);
  assert.match(stdout, new RegExp(`Agent desktop +http://127\\.0\\.0\\.1:${desktopPort}`));
  assert.ok(stdout.includes(`agent ann · password ${annPassword}`), "the box prints ann's password");
  assert.match(stdout, /pnpm postroom demo send "/);
  assert.match(stdout, /Supervisor view/);
});

test("postroom status, run separately with no flags, shows both demo mailboxes as healthy", { timeout: 60_000 }, async () => {
  const status = await postroom(["status"]);
  assert.equal(status.code, 0, `${status.out}\n${status.err}`);
  const lines = status.out.split("\n");
  for (const [mailbox, proto] of [["support", "imap"], ["sales", "pop3"]]) {
    const line = lines.find((l) => l.startsWith("demo") && l.includes(` ${mailbox} `));
    assert.ok(line, `a line for ${mailbox}:\n${status.out}`);
    assert.match(line, new RegExp(`${proto} +(idle|polling) `), line);
    assert.doesNotMatch(line, /STALLED/);
  }
});

test("the printed agent logs in without typing a queue, sees the seeded emails, and a reply lands once in the customer's mailbox", { timeout: 90_000 }, async () => {
  const annPassword = /agent ann · password (\S+)/.exec(stdout)![1]!;
  await page.goto(`http://127.0.0.1:${desktopPort}/`);
  assert.equal(await page.locator("#desk").isVisible(), false, "nothing but the login card before login");
  await page.getByLabel("Tenant").fill("demo");
  await page.getByLabel("Agent").fill("ann");
  await page.getByLabel("Password").fill(annPassword);
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await page.getByText("ann @ demo").waitFor({ timeout: 10_000 });
  assert.equal(await page.locator("#login").isVisible(), false, "the login card is gone after login");
  assert.equal(await page.locator('input[data-queue="email"]').isChecked(), true, "joined the configured queue");
  for (const subject of SEEDED) await page.getByRole("button", { name: new RegExp(subject.replace(/[.*+?^${}()|[\]\\#]/g, "\\$&")) }).first().waitFor({ timeout: 30_000 });

  await page.getByRole("button", { name: /Where is my order #10427\?/ }).click();
  await page.locator("#subject").getByText("Where is my order #10427?").waitFor({ timeout: 10_000 });
  await page.getByLabel("reply text").fill("Hello Alex, your kettle left our warehouse today.");
  await page.getByRole("button", { name: "Reply", exact: true }).click();
  await page.getByText(/reply queued for sending/).waitFor({ timeout: 10_000 });

  const inbox = await withOutput(() => waitFor(async () => {
    const r = await postroom(["demo", "inbox", "--json", "--data-dir", join(dataDir.path, "demo")]);
    const rows = r.out.split("\n").filter(Boolean).map((l) => JSON.parse(l) as { subject: string; from: string; firstLine: string; inReplyTo: string });
    return rows.some((m) => m.subject === "Re: Where is my order #10427?") ? rows : undefined;
  }, { timeoutMs: 45_000, intervalMs: 1000, what: "the reply in the customer's inbox" }));
  const replies = inbox.filter((m) => m.subject === "Re: Where is my order #10427?");
  assert.equal(replies.length, 1, "exactly once");
  assert.equal(replies[0]!.from, "support@demo.postroom.test");
  assert.equal(replies[0]!.inReplyTo, "<order-10427@customer.test>");
  assert.match(replies[0]!.firstLine, /your kettle left our warehouse/);
  const table = await postroom(["demo", "inbox", "--data-dir", join(dataDir.path, "demo")]);
  assert.match(table.out, /support@demo\.postroom\.test +Re: Where is my order #10427\?/);
});

test("postroom demo send makes a new session appear in the agent's list; Ctrl-C stops everything with exit code 0", { timeout: 90_000 }, async () => {
  const sent = await postroom(["demo", "send", "My kettle is broken", "--data-dir", join(dataDir.path, "demo")]);
  assert.equal(sent.code, 0, `${sent.out}\n${sent.err}`);
  await page.getByRole("button", { name: /My kettle is broken/ }).waitFor({ timeout: 45_000 });

  demo.kill("SIGINT");
  assert.equal(await demoExit, 0, stdout.slice(-3000));
  assert.match(stdout, /smtp-sender stopped \(exit code 0\)/);
  const status = await postroom(["status"]);
  assert.notEqual(status.code, 0, "with the demo stopped, status no longer finds a running system");
});
