import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { tempDir } from "@postroom/testkit";
import { clearRunState, commandTarget, findRunState, writeRunState, type RunState } from "./run-state.js";

const dir = tempDir("run-state");
after(() => dir.remove());

const state = (over: Partial<RunState> = {}): RunState => ({
  config: join(dir.path, "postroom.yaml"),
  natsUrl: "nats://127.0.0.1:4333",
  namespace: "demo",
  agentApi: "http://127.0.0.1:8480",
  pid: process.pid,
  startedAt: new Date().toISOString(),
  ...over,
});

test("commands run in a sub-folder find the running system's config, NATS URL and namespace; flags and the environment win", async () => {
  const path = await writeRunState(join(dir.path, ".postroom"), state());
  const sub = join(dir.path, "a", "b");
  await mkdir(sub, { recursive: true });

  const found = commandTarget(undefined, {}, sub);
  assert.equal(found.source, "state");
  assert.equal(found.config, join(dir.path, "postroom.yaml"));
  assert.equal(found.env.NATS_URL, "nats://127.0.0.1:4333");
  assert.equal(found.env.POSTROOM_NAMESPACE, "demo");

  const sameFile = commandTarget("../../postroom.yaml", { NATS_URL: "nats://elsewhere:4222" }, sub);
  assert.equal(sameFile.source, "--config");
  assert.equal(sameFile.env.NATS_URL, "nats://elsewhere:4222", "the environment beats the state file");
  assert.equal(sameFile.env.POSTROOM_NAMESPACE, "demo", "the same config: the running namespace");

  const other = commandTarget(undefined, { POSTROOM_CONFIG: "/etc/postroom/other.yaml" }, sub);
  assert.equal(other.config, "/etc/postroom/other.yaml");
  assert.equal(other.env.NATS_URL, undefined, "another config is not given this run's NATS");

  await clearRunState(path, process.pid + 1);
  assert.ok(findRunState(sub), "another process's state is left alone");
  await clearRunState(path, process.pid);
  assert.equal(commandTarget(undefined, {}, sub).config, undefined);
});

test("a state file left by a process that no longer runs is ignored", async () => {
  const stale = join(dir.path, "stale");
  // PID 2^22 + 1 is above Linux's pid_max default range; no process has it.
  await writeRunState(join(stale, ".postroom"), state({ pid: 4_194_305 }));
  assert.equal(findRunState(stale), undefined);
});
