import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { freePort, tempDir, type TempDir, waitFor } from "@postroom/testkit";
import { ROOT } from "../support/chart.js";
import { databaseRoles } from "../support/db-roles.js";
import { E2eWorld } from "../support/fixture.js";
import { SERVICES, type ServiceName } from "../support/system.js";

/**
 * The container image, built by scripts/image.sh (podman, COPY-only steps on a base the script
 * makes from this machine's node), proven by running its filesystem: containers cannot run here
 * (crun refuses cgroups and setrlimit), so each service starts in a chroot of the exported image,
 * its root mounted read-only as the chart mounts it, as the image's non-root user, with only the
 * volumes the chart gives it (/tmp, and the archive and config paths), against the test NATS and
 * PostgreSQL.
 */

const UID = 10001; // the image's USER, and the chart's podSecurityContext.runAsUser
const TAG = `localhost/postroom/postroom:test-${process.pid}`;
let w: E2eWorld;
let image: TempDir;
let rootfs = "";
const children = new Map<ServiceName, ChildProcess>();
const ports = new Map<ServiceName, number>();
const output = new Map<ServiceName | "db-setup", string>();
// As the chart runs it: the image's db-setup migrates and creates the roles as the owner, then the
// database services log in as their own users.
const roles = databaseRoles();
let setupExit: number | null = null;

/**
 * One service from the image, in its own mount namespace: the rootfs bound onto itself read-only,
 * the test's directory (config and archive) bound in writable, a tmpfs on /tmp, then chroot as the
 * image's user and its entrypoint with the service's name, as the chart runs it.
 */
function startFromImage(service: ServiceName | "db-setup", env: Record<string, string>): ChildProcess {
  const script = [
    "set -e",
    'mount --bind "$R" "$R"',
    'mount -o remount,bind,ro "$R"',
    // /tmp first: the test's directory may lie under /tmp, and a tmpfs mounted after it would hide it.
    'mount -t tmpfs -o size=16m,mode=1777 tmpfs "$R/tmp"',
    'mkdir -p "$R$W"',
    'mount --bind "$W" "$R$W"',
    `exec chroot --userspec=${UID}:${UID} "$R" /usr/local/bin/node /app/entrypoint.mjs "$S"`,
  ].join("\n");
  const child = spawn("unshare", ["--mount", "--propagation", "private", "sh", "-c", script], {
    env: { ...process.env, ...env, R: rootfs, W: w.dir.path, S: service },
    stdio: ["ignore", "pipe", "pipe"],
  });
  output.set(service, "");
  const keep = (d: Buffer) => output.set(service, (output.get(service)! + d.toString("utf8")).slice(-4000));
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  return child;
}

before(async () => {
  image = tempDir("image");
  rootfs = join(image.path, "rootfs");
  // The build: the base is made once per machine and reused; the services' layer every run.
  // A tag of this run's own: another build on the machine cannot move it between build and
  // export, and removing it afterwards leaves no image behind (the base stays, for the next run).
  await promisify(execFile)("bash", [join(ROOT, "scripts", "image.sh"), "--tag", TAG, "--rootfs", rootfs], { cwd: ROOT, timeout: 240_000, maxBuffer: 16 * 1024 * 1024 });
  process.env.IMAGE_AGENT_PASSWORD = "image-agent-password";
  w = await E2eWorld.create(
    "opsimage",
    (config) => {
      config.tenants[0]!.agents = [{ id: "ann", password: "env:IMAGE_AGENT_PASSWORD", queues: ["email"], maxSessions: 5 }];
      roles.apply(config);
    },
    // The roles are the image's db-setup's to make (that is what this test proves), not the world's.
    { dbRoles: false },
  );
  await w.system.start([]); // writes the config into w.dir; the services start from the image below
  // The service user writes the archive inside the test directory, as it writes the chart's volume.
  chmodSync(w.dir.path, 0o777);
  mkdirSync(join(w.dir.path, "archive"), { recursive: true, mode: 0o777 });
  chmodSync(join(w.dir.path, "archive"), 0o777);
  mkdirSync(join(rootfs, w.dir.path), { recursive: true }); // the mount point, made before the root turns read-only
  // The chart's db-setup Job: database.url of the config is the owner's (the test database's URL).
  const setup = startFromImage("db-setup", { POSTROOM_CONFIG: join(w.dir.path, "postroom.yaml"), LOG_LEVEL: "info", ...w.security?.env, ...roles.env });
  setupExit = await new Promise<number | null>((resolve) => setup.once("exit", (code) => resolve(code)));
  for (const s of SERVICES) {
    const port = await freePort();
    ports.set(s, port);
    children.set(s, startFromImage(s, { POSTROOM_CONFIG: join(w.dir.path, "postroom.yaml"), POSTROOM_HTTP_PORT: String(port), LOG_LEVEL: "info", ...w.security?.env, ...roles.env }));
  }
});

after(async () => {
  await Promise.all(
    [...children.values()].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once("exit", () => resolve());
          c.kill("SIGTERM");
          setTimeout(() => c.kill("SIGKILL"), 15_000).unref();
        }),
    ),
  );
  await w?.close();
  // The test's own connection (secure mode: pg's default ssl trusts the test CA; the world's copy of it is gone with w.dir).
  if (w) await roles.drop(w.db.url);
  await image?.remove();
  await promisify(execFile)("podman", ["rmi", "--force", TAG]).catch(() => undefined);
});

test("each of the five services starts from the image's filesystem, read-only and non-root, and answers /readyz", async () => {
  for (const s of SERVICES) {
    const report = await waitFor(
      async () => {
        const child = children.get(s)!;
        if (child.exitCode !== null) throw new Error(`${s} exited with ${child.exitCode}:\n${output.get(s)}`);
        const res = await fetch(`http://127.0.0.1:${ports.get(s)}/readyz`).catch(() => undefined);
        if (res?.status !== 200) return undefined;
        const body = (await res.json()) as { checks: Record<string, { ok: boolean }> };
        return body;
      },
      { timeoutMs: 60_000, what: `${s} from the image ready\n${output.get(s)}` },
    );
    const expected = s === "token-service" || s === "imap-poller" ? ["nats", "started"] : ["nats", "postgres", "started"];
    assert.deepEqual(Object.keys(report.checks).sort(), expected, `${s} checks`);
    // The process that answered is the image's node, as the image's user, in the chroot.
    const pid = children.get(s)!.pid!;
    assert.match(readFileSync(`/proc/${pid}/status`, "utf8"), new RegExp(`^Uid:\\s+${UID}\\s`, "m"), `${s} runs as ${UID}`);
    assert.equal(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, 3).join(" "), `/usr/local/bin/node /app/entrypoint.mjs ${s}`);
    const mounts = readFileSync(`/proc/${pid}/mounts`, "utf8").split("\n").map((l) => l.split(" "));
    assert.ok(mounts.some((m) => m[1] === "/" && m[3]!.split(",").includes("ro")), `${s}: its root filesystem is read-only`);
  }
});

test("the image's db-setup (the chart's Job) migrates and creates the roles; the database services then log in as their own users", async () => {
  assert.equal(setupExit, 0, `db-setup from the image:\n${output.get("db-setup")}`);
  assert.match(output.get("db-setup")!, /database set up: migrations applied, roles granted from the ownership map/);
  // Ready (above) means connected and the schema found complete; as whom:
  const users = new Set((await w.rows<{ usename: string }>("SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = current_database()")).map((r) => r.usename));
  for (const s of ["archiver", "asd-bridge", "smtp-sender"] as const) assert.ok(users.has(roles.logins[s].user), `${s} logged in as ${roles.logins[s].user}: ${[...users].join(", ")}`);
});

test("the image holds the compiled services and production dependencies only", () => {
  const store = readdirSync(join(rootfs, "app", "node_modules", ".pnpm"));
  for (const dev of ["typescript@", "tsx@", "eslint@", "esbuild@", "@postroom+testkit", "playwright-core@", "@types+pg@"]) {
    assert.ok(!store.some((p) => p.startsWith(dev)), `no ${dev} in the image`);
  }
  for (const prod of ["pg@", "imapflow@", "@nats-io+jetstream@", "pino@"]) assert.ok(store.some((p) => p.startsWith(prod)), `${prod} is there`);
  for (const s of SERVICES) {
    assert.ok(existsSync(join(rootfs, "app", "node_modules", "@postroom", s, "dist", "main.js")), `${s} is compiled`);
    assert.ok(!existsSync(join(rootfs, "app", "node_modules", "@postroom", s, "dist", "main.test.js")), `${s}: no tests`);
  }
  assert.ok(existsSync(join(rootfs, "usr", "local", "bin", "node")), "node where node:20-slim has it");
});
