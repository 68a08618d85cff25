import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Supervisor, type ServiceCommand, type SupervisorEvent } from "./supervisor.js";

/** An output that keeps what was written, like a terminal would show it. */
class Capture {
  text = "";
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
  lines(): string[] {
    return this.text.split("\n").filter((l) => l !== "");
  }
}

function node(name: string, script: string): ServiceCommand {
  return { name, command: process.execPath, args: ["-e", script] };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    assert.equal((error as NodeJS.ErrnoException).code, "ESRCH");
    return false;
  }
}

const KEEP_ALIVE = "setInterval(() => {}, 1000);";

describe("Supervisor", () => {
  it("prefixes every line with the padded service name and renders pino JSON readably", async () => {
    const out = new Capture();
    const pino = JSON.stringify({ level: 40, time: Date.UTC(2026, 0, 2, 3, 4, 5, 6), pid: 1, hostname: "h", msg: "mailbox slow", mailbox: "support" });
    const supervisor = new Supervisor({
      services: [
        node("archiver", `console.log("plain text line"); console.log(${JSON.stringify(pino)}); console.error("on stderr"); ${KEEP_ALIVE}`),
        node("imap-poller", `console.log("hello"); ${KEEP_ALIVE}`),
      ],
      output: out,
      colour: false,
    });
    await supervisor.start();
    try {
      await waitFor("all lines", () => out.text.includes("on stderr") && out.text.includes("hello"));
    } finally {
      await supervisor.stop();
    }
    const lines = out.lines();
    assert.ok(lines.includes("archiver    │ plain text line"), out.text);
    assert.ok(lines.includes("archiver    │ on stderr"), out.text);
    assert.ok(lines.includes("imap-poller │ hello"), out.text);
    const rendered = lines.find((l) => l.includes("mailbox slow"));
    assert.match(rendered ?? "", /^archiver {4}│ \d\d:\d\d:05\.006 WARN {2}mailbox slow mailbox=support$/);
    assert.ok(!out.text.includes("\x1b["), "no colour codes when colour is off");
  });

  it("restarts a child that keeps crashing, waiting longer each time, and says so", async () => {
    const out = new Capture();
    const events: SupervisorEvent[] = [];
    const spawnedAt: number[] = [];
    const supervisor = new Supervisor({
      services: [node("token-service", `console.log("starting"); process.exit(3);`)],
      output: out,
      colour: false,
      backoff: { initialMs: 100, maxMs: 300, factor: 2, jitter: 0 },
      onEvent: (e) => {
        events.push(e);
        if (e.type === "spawned") spawnedAt.push(Date.now());
      },
    });
    await supervisor.start();
    try {
      await waitFor("four starts", () => spawnedAt.length >= 4);
    } finally {
      await supervisor.stop();
    }
    const delays = events.flatMap((e) => (e.type === "restart-scheduled" ? [e.delayMs] : []));
    assert.deepEqual(delays.slice(0, 3), [100, 200, 300], "doubles, then capped at maxMs");
    for (let i = 1; i < 4; i++) {
      const gap = (spawnedAt[i] ?? 0) - (spawnedAt[i - 1] ?? 0);
      assert.ok(gap >= (delays[i - 1] ?? 0), `restart ${i} waited ${gap} ms, expected at least ${delays[i - 1]} ms`);
    }
    assert.match(out.text, /postroom {6}│ token-service exited unexpectedly \(exit code 3\) after \d+\.\d s; restarting in 0\.1 s \(attempt 1\)/);
    assert.match(out.text, /restarting in 0\.2 s \(attempt 2\)/);
    assert.ok((supervisor.status()[0]?.restarts ?? 0) >= 3);
  });

  it("stop() terminates every child, and no PID is left running", async () => {
    const out = new Capture();
    // Child c says it has its SIGTERM handler by creating a file: the test waits on that state,
    // not on a fixed pause that a loaded machine can outlast.
    const marker = join(mkdtempSync(join(tmpdir(), "supervisor-")), "c-ready");
    const supervisor = new Supervisor({
      services: [
        node("a", KEEP_ALIVE),
        node("b", KEEP_ALIVE),
        node("c", `process.on("SIGTERM", () => { console.log("draining"); process.exit(0); }); require("node:fs").writeFileSync(${JSON.stringify(marker)}, ""); ${KEEP_ALIVE}`),
      ],
      output: out,
      colour: false,
    });
    await supervisor.start();
    const pids = supervisor.status().map((s) => s.pid);
    assert.equal(pids.length, 3);
    for (const pid of pids) assert.ok(pid !== undefined && isAlive(pid));
    await waitFor("child c's SIGTERM handler", () => existsSync(marker), 30_000);
    await supervisor.stop();
    for (const pid of pids) assert.equal(isAlive(pid as number), false, `pid ${pid} still running`);
    assert.deepEqual(supervisor.status().map((s) => s.pid), [undefined, undefined, undefined]);
    const draining = out.text.indexOf("c        │ draining");
    assert.ok(draining >= 0 && draining < out.text.indexOf("c stopped (exit code 0)"), "the child's last lines come before 'stopped'");
    assert.match(out.text, /a stopped \(signal SIGTERM\)/);
  });

  it("sends SIGKILL to a child that ignores SIGTERM once the stop timeout has passed", async () => {
    const out = new Capture();
    const events: SupervisorEvent[] = [];
    const supervisor = new Supervisor({
      services: [node("stubborn", `process.on("SIGTERM", () => console.log("ignoring SIGTERM")); console.log("ready"); ${KEEP_ALIVE}`)],
      output: out,
      colour: false,
      stopTimeoutMs: 400,
      onEvent: (e) => events.push(e),
    });
    await supervisor.start();
    await waitFor("ready", () => out.text.includes("ready"));
    const pid = supervisor.status()[0]?.pid as number;
    const began = Date.now();
    await supervisor.stop();
    const took = Date.now() - began;
    assert.ok(took >= 400, `stop took ${took} ms, should have waited for the timeout first`);
    assert.equal(isAlive(pid), false);
    assert.match(out.text, /ignoring SIGTERM/);
    assert.match(out.text, /stubborn did not stop within 0\.4 s; sending SIGKILL/);
    const exited = events.find((e) => e.type === "exited");
    assert.deepEqual(exited && exited.type === "exited" ? [exited.signal, exited.expected] : [], ["SIGKILL", true]);
  });

  it("kill() ends children at once without waiting for the stop timeout", async () => {
    const out = new Capture();
    const supervisor = new Supervisor({
      services: [node("stubborn", `process.on("SIGTERM", () => {}); console.log("ready"); ${KEEP_ALIVE}`)],
      output: out,
      colour: false,
      stopTimeoutMs: 10_000,
    });
    await supervisor.start();
    await waitFor("ready", () => out.text.includes("ready"));
    const pid = supervisor.status()[0]?.pid as number;
    const began = Date.now();
    const stopped = supervisor.stop();
    await new Promise((r) => setTimeout(r, 100));
    supervisor.kill();
    await stopped;
    assert.ok(Date.now() - began < 5_000);
    assert.equal(isAlive(pid), false);
  });

  it("does not restart a crashed child once stop() has been called", async () => {
    const out = new Capture();
    let spawns = 0;
    const supervisor = new Supervisor({
      services: [node("flaky", "process.exit(1)")],
      output: out,
      colour: false,
      backoff: { initialMs: 300, maxMs: 300, factor: 2, jitter: 0 },
      onEvent: (e) => {
        if (e.type === "spawned") spawns++;
      },
    });
    await supervisor.start();
    await waitFor("the crash", () => out.text.includes("restarting in"));
    await supervisor.stop();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(spawns, 1);
  });

  it("colours prefixes only when asked to", async () => {
    const out = new Capture();
    const supervisor = new Supervisor({ services: [node("archiver", `console.log("x"); ${KEEP_ALIVE}`)], output: out, colour: true });
    await supervisor.start();
    await waitFor("output", () => out.text.includes("x"));
    await supervisor.stop();
    assert.ok(out.text.includes("\x1b[36marchiver"), JSON.stringify(out.text));
  });
});
