import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

// The chaos run's short profile as part of the suite (and so of CI): the whole system on a
// three-node JetStream cluster while services are SIGKILLed and SIGSTOPped, a NATS node and the
// mail stream's leader restart, PostgreSQL stops for 30 s, Dovecot restarts and the archive disk
// fills (test/chaos/README.md). The run checks every invariant itself and exits 0 only when none
// was broken; this file runs it and reads its report, so a failure names what broke.
//
// The seed is fixed so a CI failure can be replayed (`pnpm chaos` with the printed arguments);
// POSTROOM_CHAOS_SEED runs another. The profile is sized for CI's budget on a 2-core machine.
const SEED = process.env.POSTROOM_CHAOS_SEED ?? "7";
const PROFILE = ["--mails", "600", "--minutes", "2", "--mailboxes", "20", "--converge-minutes", "4"];
const TEST_DIR = fileURLToPath(new URL("..", import.meta.url));

interface ChaosReport {
  seed: number;
  result: {
    archived: number;
    lost: number;
    duplicated: number;
    notByteIdentical: number;
    sessionProblems: number;
    replies: { acceptedByApi: number; recorded: number; problems: number; inSmtpCrashWindow: number };
    stuckSessions: number;
    consumersLagging: number;
    secretsInLogs: number;
    unplannedExits: number;
    samples: number;
    extraSourceCopies: number;
  };
  violations: number;
}

test(`chaos, short profile (600 mails, 2 minutes of faults, seed ${SEED}): nothing lost, nothing offered or sent twice, nothing changed at the source before its commit`, { timeout: 840_000 }, async () => {
  const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", "chaos/run.ts", ...PROFILE, "--seed", SEED], {
    cwd: TEST_DIR,
    env: process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out: Buffer[] = [];
  const echo = (d: Buffer) => {
    out.push(d);
    process.stdout.write(d);
  };
  child.stdout.on("data", echo);
  child.stderr.on("data", echo);
  const code = await new Promise<number | null>((resolve) => child.once("close", (c) => resolve(c)));
  const text = Buffer.concat(out).toString("utf8");
  assert.notEqual(code, 2, "the chaos run itself failed (set-up or harness), see its output above");
  const json = text.match(/=+ chaos report =+\n(\{[\s\S]*?\n\})\n/)?.[1];
  assert.ok(json, "the run printed its report");
  const report = JSON.parse(json) as ChaosReport;
  const r = report.result;
  assert.equal(report.seed, Number(SEED));
  // A mail Postfix stored twice in Dovecot (after a 421 to the end of DATA) is two source
  // messages, each rightly archived; the run lists each such case and counts the extra rows.
  assert.equal(r.archived, 600 + r.extraSourceCopies, "every mail archived, once per copy at the source");
  assert.deepEqual(
    { lost: r.lost, duplicated: r.duplicated, notByteIdentical: r.notByteIdentical, sessionProblems: r.sessionProblems, replyProblems: r.replies.problems, stuck: r.stuckSessions, lagging: r.consumersLagging, secrets: r.secretsInLogs, unplannedExits: r.unplannedExits },
    { lost: 0, duplicated: 0, notByteIdentical: 0, sessionProblems: 0, replyProblems: 0, stuck: 0, lagging: 0, secrets: 0, unplannedExits: 0 },
  );
  assert.ok(r.replies.acceptedByApi > 0 && r.replies.recorded === r.replies.acceptedByApi, "the agents' replies were taken and each recorded");
  assert.ok(r.samples > 10, "the source was sampled throughout the run");
  assert.equal(report.violations, 0, "no violation (listed above, grouped by kind)");
  assert.equal(code, 0);
  // Replies a SIGKILLed sender had handed to Postfix but not recorded are sent again (RFC 1047's
  // window, traced to the killed connection in Postfix's log by the run); said, not hidden.
  if (r.replies.inSmtpCrashWindow > 0) console.log(`${r.replies.inSmtpCrashWindow} reply(ies) delivered twice inside SMTP's crash window (listed in the report)`);
});
