/**
 * `postroom demo [--reset] [--port N] [--data-dir DIR]`: everything `up` runs, plus a local
 * Dovecot (IMAP and POP3) and Postfix on loopback ports, a demo tenant with two mailboxes and two
 * agents, and a few customer emails — so a newcomer sees mail reach the agent desktop and a reply
 * reach the customer, from one command, with no mailbox of their own.
 */
import { existsSync } from "node:fs";
import { createHash } from "node:crypto";
import { chmod, mkdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { names as namesOf } from "@postroom/contracts";
import { dovecotAuthListener, findBinary, freePort, MissingBinaryError, startDovecot, startPostfix, waitFor, type DovecotServer, type PostfixServer } from "@postroom/mail-servers";
import { connectNats, openKv } from "@postroom/nats-kit";
import nodemailer from "nodemailer";
import pg from "pg";
import { EXIT_USAGE } from "../dispatch.js";
import { findRunState } from "./run-state.js";
import { portIsFree } from "./up-deps.js";
import { runUp } from "./up.js";
import {
  box,
  DEMO,
  DEMO_AGENTS,
  demoConfigYaml,
  demoGeneration,
  demoPaths,
  demoSecrets,
  seedMails,
  writeDemoInfo,
  type DemoPaths,
  type SeedMail,
} from "./demo-setup.js";

export const help = `Usage: postroom demo [--reset] [--port N] [--data-dir DIR]
       postroom demo send "subject" [--to support|sales] [--text TEXT]
       postroom demo inbox

Runs Postroom with a local Dovecot (IMAP, POP3) and Postfix on loopback ports, a demo tenant with
two mailboxes (support over IMAP, sales over POP3), two agents and a few customer emails, then
prints the desktop URL, the logins and what to try. Replies from the desktop land in the demo
customer's mailbox (\`postroom demo inbox\`). Everything is kept under .postroom/demo.

Needs dovecot-imapd, dovecot-pop3d, dovecot-lmtpd, postfix and openssl (Debian); bash
scripts/up.sh installs them as root. Postfix needs root.

  --reset           delete .postroom/demo first and start over (new mailboxes, new passwords)
  --port N          the agent desktop's port (default 8480, or a free one when it is taken)
  --data-dir DIR    instead of .postroom/demo
  -h, --help        show this help

Ctrl-C stops the services, then the mail servers, and exits 0.`;

/** Debian packages the demo's mail servers come from, by the file that shows each is installed. */
const NEEDED: Array<{ package: string; present: () => boolean }> = [
  { package: "dovecot-imapd", present: () => has("dovecot") && existsSync("/usr/lib/dovecot/imap") },
  { package: "dovecot-pop3d", present: () => existsSync("/usr/lib/dovecot/pop3") },
  { package: "dovecot-lmtpd", present: () => existsSync("/usr/lib/dovecot/lmtp") },
  { package: "postfix", present: () => has("postfix") && existsSync(process.env.POSTROOM_POSTFIX_DAEMON_DIR ?? "/usr/lib/postfix/sbin") },
  { package: "openssl", present: () => has("openssl") },
];

function has(binary: string): boolean {
  try {
    findBinary(binary);
    return true;
  } catch (error) {
    if (error instanceof MissingBinaryError) return false;
    throw error;
  }
}

/** Seams for tests. */
export interface DemoOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  output?: { write(chunk: string): unknown; isTTY?: boolean };
  errors?: { write(chunk: string): unknown };
}

export function run(argv: string[]): Promise<number> {
  return runDemo(argv);
}

export async function runDemo(argv: string[], options: DemoOptions = {}): Promise<number> {
  const cwd = options.cwd ?? process.cwd();
  const env = options.env ?? process.env;
  const out = options.output ?? process.stdout;
  const err = options.errors ?? process.stderr;
  const say = (message: string) => out.write(`postroom demo: ${message}\n`);
  const fail = (message: string, fix?: string) => {
    err.write(`postroom demo: ${message}\n`);
    if (fix) err.write(`  fix: ${fix}\n`);
  };

  let values: { reset?: boolean | undefined; port?: string | undefined; "data-dir"?: string | undefined; help?: boolean | undefined };
  try {
    values = parseArgs({
      args: argv,
      options: { reset: { type: "boolean" }, port: { type: "string" }, "data-dir": { type: "string" }, help: { type: "boolean", short: "h" } },
      allowPositionals: false,
    }).values;
  } catch (error) {
    err.write(`postroom demo: ${(error as Error).message}\n\n${help}\n`);
    return EXIT_USAGE;
  }
  if (values.help) {
    out.write(`${help}\n`);
    return 0;
  }
  const paths = demoPaths(resolve(cwd, values["data-dir"] ?? join(".postroom", "demo")));
  const shown = (path: string) => relative(cwd, path) || ".";

  // 1. What this machine lacks, named before anything is started.
  const missing = NEEDED.filter((n) => !n.present()).map((n) => n.package);
  if (missing.length > 0) {
    fail(
      `the demo's mail servers are not installed: ${missing.join(", ")}`,
      `apt-get install -y --no-install-recommends ${missing.join(" ")}  (as root; bash scripts/up.sh does this for you), or point Postroom at a real mailbox: see examples/postroom.example.yaml`,
    );
    return 1;
  }
  if (userInfo().uid !== 0) {
    fail(
      "the demo runs its own Postfix, and Postfix's master needs root to run its services as the postfix user",
      "run it as root (sudo bash scripts/up.sh), or use a mailbox you have: POSTROOM_CONFIG=your.yaml bash scripts/up.sh (see examples/postroom.example.yaml)",
    );
    return 1;
  }

  // 2. --reset: only when no demo runs from this folder.
  const running = findRunState(cwd);
  if (running?.state.demo && running.state.config === paths.config) {
    fail(`a demo is already running (pid ${running.state.pid}, desktop ${running.state.agentApi})`, "use that one, or stop it with Ctrl-C first");
    return 1;
  }
  if (values.reset && existsSync(paths.dir)) {
    await dropOldDatabase(paths, env).catch(() => undefined);
    await rm(fallbackDir(paths), { recursive: true, force: true });
    await rm(paths.dir, { recursive: true, force: true });
    say(`deleted ${shown(paths.dir)}: starting over`);
  }
  await mkdir(paths.dir, { recursive: true });
  const generation = demoGeneration(paths.dir);
  await writeFile(join(paths.dir, "generation"), `${generation}\n`);
  const secrets = await demoSecrets(paths.envFile);
  const firstStart = !existsSync(paths.seeded);

  // 3. The mail servers, in their own process groups: Ctrl-C reaches only us, and we stop the
  // services before the servers they read from.
  const serverDirs = await mailServerDirs(paths);
  if (serverDirs.movedTo) say(`Dovecot and Postfix keep their files in ${serverDirs.movedTo}: their users (nobody, postfix) cannot enter ${serverDirs.blockedBy}`);
  let dovecot: DovecotServer | undefined;
  let postfix: PostfixServer | undefined;
  try {
    say(`starting Dovecot and Postfix (data in ${shown(paths.dir)})`);
    const saslPort = await freePort();
    dovecot = await startDovecot({
      dir: serverDirs.dovecot,
      detached: true,
      ssl: true,
      lmtp: true,
      extraConfig: dovecotAuthListener(saslPort),
      users: [
        { user: DEMO.support, password: secrets.DEMO_SUPPORT_PASSWORD! },
        { user: DEMO.sales, password: secrets.DEMO_SALES_PASSWORD! },
        { user: DEMO.customer, password: secrets.DEMO_CUSTOMER_PASSWORD! },
      ],
    });
    postfix = await startPostfix({ dir: serverDirs.postfix, detached: true, lmtpPort: dovecot.info.lmtpPort!, saslPort });
    // One file with both servers' certificates: the services verify them (NODE_EXTRA_CA_CERTS) as
    // they would a real server's, instead of turning verification off.
    const cas = [await readFile(dovecot.info.caCertPath!, "utf8"), await readFile(postfix.info.caCertPath, "utf8")];
    if (env.NODE_EXTRA_CA_CERTS && existsSync(env.NODE_EXTRA_CA_CERTS)) cas.push(await readFile(env.NODE_EXTRA_CA_CERTS, "utf8"));
    await writeFile(paths.caBundle, cas.join("\n"));

    const wanted = values.port === undefined ? 8480 : Number(values.port);
    if (!Number.isInteger(wanted) || wanted < 1 || wanted > 65535) {
      fail(`--port ${values.port}: not a port number`);
      return EXIT_USAGE;
    }
    const desktopPort = values.port === undefined && !(await portIsFree(wanted)) ? await freePort() : wanted;
    const database = `postroom_demo_${generation}`;
    const namespace = env.POSTROOM_NAMESPACE || `demo-${generation}`;
    await writeFile(
      paths.config,
      demoConfigYaml({ imapPort: dovecot.info.imapPort, pop3Port: dovecot.info.pop3Port, submissionPort: postfix.info.submissionPort, desktopPort, database, namespace }),
    );
    const desktopUrl = `http://127.0.0.1:${desktopPort}`;
    await writeDemoInfo(paths.info, {
      host: "127.0.0.1",
      imapPort: dovecot.info.imapPort,
      pop3Port: dovecot.info.pop3Port,
      submissionPort: postfix.info.submissionPort,
      caBundle: paths.caBundle,
      desktopUrl,
      database,
      namespace,
    });

    const printBox = () =>
      out.write(
        box([
          "Postroom demo is running",
          "",
          `Agent desktop    ${desktopUrl}`,
          ...DEMO_AGENTS.map((a) => `  log in as       tenant ${DEMO.tenant} · agent ${a.id} · password ${secrets[a.env]}${a.supervisor ? "  (supervisor)" : ""}`),
          `Supervisor view  ${desktopUrl}  (log in as bob: "Queues now")`,
          `Demo mailboxes   ${DEMO.support} (IMAP), ${DEMO.sales} (POP3)`,
          `Customer         ${DEMO.customer}: the desktop's replies land here`,
          "",
          `Send another     pnpm postroom demo send "My kettle is broken"`,
          "Customer inbox   pnpm postroom demo inbox",
          "Mailbox health   pnpm postroom status",
          "",
          `Ctrl-C stops it; pnpm postroom demo --reset starts over. Config: ${shown(paths.config)}`,
        ]),
      );

    // 4. Everything `up` runs, with the demo's config; the seed mails once the poller watches.
    return await runUp(["--config", paths.config, "--data-dir", paths.dir], {
      cwd,
      env,
      output: out,
      errors: err,
      demo: true,
      childEnv: { NODE_EXTRA_CA_CERTS: paths.caBundle },
      onRunning: async ({ nats }) => {
        if (firstStart) {
          await waitUntilWatched(nats.url, namespace);
          const from = { address: DEMO.customer, password: secrets.DEMO_CUSTOMER_PASSWORD! };
          await sendAsCustomer(postfix!.info.host, postfix!.info.submissionPort, await readFile(paths.caBundle), from, seedMails());
          await writeFile(paths.seeded, `${new Date().toISOString()}\n`);
          say(`delivered ${seedMails().length} customer emails (one is an auto-reply, archived but not offered)`);
        }
        printBox();
      },
    });
  } catch (error) {
    fail((error as Error).message.split("\n")[0]!, "see the logs under .postroom/demo/dovecot and .postroom/demo/postfix, or run with --reset");
    return 1;
  } finally {
    await postfix?.stop();
    await dovecot?.stop();
  }
}

/**
 * Waits until imap-poller reports a completed check of every demo mailbox: a mailbox starts "from
 * now" (at UIDNEXT), so mail delivered before its first check would never be offered.
 */
async function waitUntilWatched(natsUrl: string, namespace: string): Promise<void> {
  const nc = await connectNats({ url: natsUrl, name: "postroom-demo" });
  try {
    const names = namesOf(namespace);
    const kv = await openKv(nc, names.buckets.mailboxStatus, { replicas: 1 });
    await waitFor(
      async () => {
        for (const mailbox of ["support", "sales"]) {
          const entry = await kv.get(names.mailboxKey(DEMO.tenant, mailbox));
          const status = entry?.value.length ? (entry.json() as { lastCheckAt?: string | null }) : undefined;
          if (!status?.lastCheckAt) return false;
        }
        return true;
      },
      { timeoutMs: 120_000, intervalMs: 250, what: "imap-poller's first check of the demo mailboxes" },
    );
  } finally {
    await nc.close();
  }
}

/** Sends mails as the demo customer through the demo's Postfix (STARTTLS, checked against its CA). */
export async function sendAsCustomer(host: string, port: number, ca: Buffer, from: { address: string; password: string }, mails: SeedMail[]): Promise<string[]> {
  const transport = nodemailer.createTransport({ host, port, secure: false, requireTLS: true, tls: { ca }, auth: { user: from.address, pass: from.password } });
  const ids: string[] = [];
  try {
    for (const m of mails) {
      const info = await transport.sendMail({
        from: { name: DEMO.customerName, address: from.address },
        to: m.to,
        subject: m.subject,
        text: m.text,
        ...(m.html ? { html: m.html } : {}),
        messageId: m.messageId,
        ...(m.inReplyTo ? { inReplyTo: m.inReplyTo } : {}),
        ...(m.references ? { references: m.references } : {}),
        ...(m.headers ? { headers: m.headers } : {}),
        ...(m.attachments ? { attachments: m.attachments } : {}),
      });
      ids.push(info.messageId);
    }
  } finally {
    transport.close();
  }
  return ids;
}

/** After --reset, the old generation's database goes too when it lives in a PostgreSQL we can reach. */
async function dropOldDatabase(paths: DemoPaths, env: NodeJS.ProcessEnv): Promise<void> {
  if (!existsSync(paths.info) || env.DATABASE_URL) return;
  const info = JSON.parse(await readFile(paths.info, "utf8")) as { database?: string };
  if (!info.database || !/^postroom_demo_[0-9a-f]+$/.test(info.database)) return;
  const client = new pg.Client({ connectionString: "postgres://postgres@127.0.0.1:5432/postgres", connectionTimeoutMillis: 2000 });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${info.database}"`);
  } finally {
    await client.end();
  }
}

/** Where the mail servers' folders go when .postroom/demo cannot be reached by their users. */
function fallbackDir(paths: DemoPaths): string {
  return join("/var/lib/postroom-demo", createHash("sha256").update(paths.dir).digest("hex").slice(0, 12));
}

/**
 * Dovecot's login and mail processes run as `nobody` and Postfix's as `postfix`: they must be able
 * to walk down to their folders. A repository under /root (mode 0700) would stop them with
 * "Permission denied" deep in a log, so then the two folders live under /var/lib/postroom-demo
 * instead, with symbolic links from .postroom/demo so the files are still found there.
 */
async function mailServerDirs(paths: DemoPaths): Promise<{ dovecot: string; postfix: string; movedTo?: string; blockedBy?: string }> {
  let blockedBy: string | undefined;
  for (let dir = paths.dir; dirname(dir) !== dir; dir = dirname(dir)) {
    if (((await stat(dir)).mode & 0o001) === 0 && dir !== paths.dir) {
      blockedBy = dir;
      break;
    }
  }
  await chmod(paths.dir, 0o711);
  if (blockedBy === undefined) return { dovecot: paths.dovecot, postfix: paths.postfix };
  const base = fallbackDir(paths);
  await mkdir(base, { recursive: true, mode: 0o711 });
  await chmod(dirname(base), 0o711);
  for (const name of ["dovecot", "postfix"] as const) {
    const link = paths[name];
    if (!existsSync(link)) await symlink(join(base, name), link).catch(() => undefined);
  }
  return { dovecot: join(base, "dovecot"), postfix: join(base, "postfix"), movedTo: base, blockedBy };
}
