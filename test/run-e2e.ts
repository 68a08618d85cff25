/**
 * Runs the end-to-end suite: every file under e2e/ as its own `node --test` process, a few at a
 * time, against the services built as production runs them (dist/, not tsx).
 *
 * Why a runner and not `node --test e2e/*.ts`: one file per process keeps a file that hangs from
 * holding up the rest (each gets a deadline, after which its whole process group is killed and the
 * file counts as failed); files that measure memory, latency or rates run alone at the end, so a
 * neighbour's load cannot fail them; and the summary at the end says which file failed and how long
 * each took, which is what a CI log's last lines should say.
 *
 *   node --import tsx test/run-e2e.ts [file-or-name ...]
 *
 * Environment: POSTROOM_E2E_JOBS (files at once, default 3), POSTROOM_E2E_FILE_TIMEOUT_S (per file,
 * default 900), POSTROOM_E2E_SOURCE=1 (run the services from source through tsx, skipping the build),
 * POSTROOM_E2E_SECURE (default 1: every world on a private nats-server with TLS and a least-privilege
 * user per service, and on PostgreSQL over TLS only with a role per service — support/secure.ts;
 * 0: the shared plain servers on 4222 and 5432, as a file run alone with `node --test` uses).
 */
import { spawn, spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = resolve(fileURLToPath(new URL(".", import.meta.url)));
const ROOT = resolve(HERE, "..");

/**
 * Files whose assertions are about time, memory or rates: each runs with the machine to itself.
 * (A test that only waits on state belongs in the shared pool, whatever its length, and so does
 * one whose only timed bounds a busy machine cannot break: ingest-auth's at most five failed
 * logins in 45 s and send-rate's held-back message are limits that load can only make easier.)
 */
const ALONE = new Set([
  "ingest-large.test.ts", // the poller's peak resident memory
  "ingest-replicas.test.ts", // failover within a polling bound
  "ingest-backlog.test.ts", // a backlog's throughput and a kill part-way through it
  "walking-skeleton.test.ts", // pick-up within seconds of delivery
  "auth-oauth.test.ts", // a minute of 5-second tokens without one authentication failure
  "auth-delegated.test.ts", // refresh-token rotation over several token lifetimes
  "cluster-failover.test.ts", // a reconnect to another NATS node within 10 s
]);

/**
 * The longest files of the shared pool start first, so their lane runs beside the others' rather
 * than after them. The chaos run waits only on state (its checks are invariants, and it gives the
 * system minutes to settle), so it shares the machine.
 */
const FIRST = ["chaos-short.test.ts"];

interface Result {
  file: string;
  ok: boolean;
  seconds: number;
  tests: string;
  why?: string;
}

const jobs = Math.max(1, Number(process.env.POSTROOM_E2E_JOBS ?? 3));
const deadlineMs = Math.max(60, Number(process.env.POSTROOM_E2E_FILE_TIMEOUT_S ?? 900)) * 1000;
const fromSource = process.env.POSTROOM_E2E_SOURCE === "1";
// Secure unless switched off: CI (scripts/test.sh → pnpm run test:e2e) runs the suite as the chart deploys.
const secure = process.env.POSTROOM_E2E_SECURE === "0" ? "0" : "1";

function selectFiles(args: string[]): string[] {
  const all = readdirSync(join(HERE, "e2e"))
    .filter((f) => f.endsWith(".test.ts"))
    .sort();
  if (args.length === 0) return all;
  const picked = all.filter((f) => args.some((a) => f === basename(a) || f === `${a}.test.ts` || f.startsWith(basename(a))));
  if (picked.length === 0) {
    console.error(`no e2e file matches ${args.join(" ")}; the files are:\n  ${all.join("\n  ")}`);
    process.exit(2);
  }
  return picked;
}

/** The services and the packages they need, compiled once for every file's processes. */
function buildServices(): void {
  const started = Date.now();
  // turbo builds each service's workspace dependencies first (their dist/ is what a service imports).
  const r = spawnSync("pnpm", ["exec", "turbo", "run", "build", "--filter=./services/*", "--output-logs=errors-only", "--concurrency=2"], {
    cwd: ROOT,
    stdio: "inherit",
    env: { ...process.env, TURBO_TELEMETRY_DISABLED: "1" },
  });
  if (r.status !== 0) {
    console.error("e2e: building the services failed; nothing was run");
    process.exit(1);
  }
  console.log(`e2e: services built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

function runFile(file: string): Promise<Result> {
  const started = Date.now();
  return new Promise((done) => {
    const child = spawn(
      process.execPath,
      // --test-force-exit: once its tests are done the file ends, even if a world that failed to
      // start left a server running (that kept CI's last run waiting until its 90 minutes were up).
      ["--conditions=source", "--import", "tsx", "--test", "--test-force-exit", "--test-reporter=spec", join("e2e", file)],
      {
        cwd: HERE,
        env: { ...process.env, ...(fromSource ? {} : { POSTROOM_E2E_COMPILED: "1" }), POSTROOM_E2E_SECURE: secure, FORCE_COLOR: "0", NO_COLOR: "1" },
        stdio: ["ignore", "pipe", "pipe"],
        // Its own process group: on the deadline the file's Dovecot, Postfix and services go too.
        detached: true,
      },
    );
    const out: Buffer[] = [];
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => out.push(d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // already gone
      }
    }, deadlineMs);
    // Whatever the file left behind in its process group (a Dovecot, a Postfix, anything holding
    // its output pipe open) goes with it.
    child.once("exit", () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // nothing left
      }
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      const text = Buffer.concat(out).toString("utf8");
      const count = (label: string) => text.match(new RegExp(`ℹ ${label} (\\d+)`))?.[1] ?? "?";
      const seconds = (Date.now() - started) / 1000;
      const ok = !timedOut && code === 0;
      const why = timedOut ? `killed after the ${deadlineMs / 1000} s deadline` : code !== 0 ? `exit ${code ?? signal}` : undefined;
      const tests = `${count("pass")} passed, ${count("fail")} failed`;
      console.log(`\n━━━━ ${file} — ${ok ? "ok" : "FAILED"} in ${seconds.toFixed(0)} s (${tests}${why ? `; ${why}` : ""})`);
      process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
      console.log(`━━━━ end of ${file}`);
      done({ file, ok, seconds, tests, ...(why ? { why } : {}) });
    });
  });
}

async function pool(files: string[], width: number): Promise<Result[]> {
  const queue = [...files];
  const results: Result[] = [];
  const lanes = Array.from({ length: Math.min(width, queue.length) }, async () => {
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) results.push(await runFile(file));
  });
  await Promise.all(lanes);
  return results;
}

async function main(): Promise<void> {
  const files = selectFiles(process.argv.slice(2));
  if (!fromSource) buildServices();
  const started = Date.now();
  const shared = files.filter((f) => !ALONE.has(f)).sort((a, b) => Number(FIRST.includes(b)) - Number(FIRST.includes(a)));
  const alone = files.filter((f) => ALONE.has(f));
  console.log(
    `e2e: ${files.length} files, ${shared.length} ${jobs} at a time, then ${alone.length} alone; ${deadlineMs / 1000} s each at most; ` +
      (secure === "1" ? "secure (per-service NATS and PostgreSQL users, TLS; POSTROOM_E2E_SECURE=0 for the plain shared servers)" : "plain shared servers"),
  );
  const results = [...(await pool(shared, jobs)), ...(await pool(alone, 1))];

  const failed = results.filter((r) => !r.ok);
  console.log(`\ne2e summary (${((Date.now() - started) / 1000).toFixed(0)} s in all):`);
  for (const r of [...results].sort((a, b) => b.seconds - a.seconds)) {
    console.log(`  ${r.ok ? "ok    " : "FAILED"} ${r.seconds.toFixed(0).padStart(4)} s  ${r.file}  (${r.tests}${r.why ? `; ${r.why}` : ""})`);
  }
  console.log(failed.length === 0 ? `e2e: all ${results.length} files passed` : `e2e: ${failed.length} of ${results.length} files FAILED: ${failed.map((r) => r.file).join(", ")}`);
  process.exitCode = failed.length === 0 ? 0 : 1;
}

await main();
