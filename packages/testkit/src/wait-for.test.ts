import assert from "node:assert/strict";
import { createServer } from "node:net";
import { test } from "node:test";
import { freePort, freePorts, tempDir, waitFor, WaitForTimeoutError } from "@postroom/mail-servers";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";

test("waitFor returns the first truthy value and treats throws as not yet", async () => {
  let calls = 0;
  const value = await waitFor(
    () => {
      calls += 1;
      if (calls < 3) throw new Error("not ready");
      return calls === 3 ? undefined : { calls };
    },
    { intervalMs: 1 },
  );
  assert.deepEqual(value, { calls: 4 });
});

test("waitFor's timeout names what it waited for and the last error", async () => {
  const error = await waitFor(
    () => {
      throw new Error("connection refused");
    },
    { timeoutMs: 50, intervalMs: 10, what: "the archiver to start" },
  ).catch((e: unknown) => e);
  assert.ok(error instanceof WaitForTimeoutError);
  assert.match(error.message, /waiting for the archiver to start; last error Error: connection refused/);
  assert.ok(error.cause instanceof Error);
});

test("waitFor's 'what' as a function is read when the wait gives up, so it quotes the state then", async () => {
  let output = "";
  let reads = 0;
  const error = await waitFor(
    () => {
      output += ".";
      return false;
    },
    {
      timeoutMs: 60,
      intervalMs: 10,
      what: () => {
        reads += 1;
        return `the poller (output ${output.length})`;
      },
    },
  ).catch((e: unknown) => e);
  assert.ok(error instanceof WaitForTimeoutError);
  assert.equal(reads, 1);
  // Read at the start it would say 0; the condition ran once per attempt before the timeout.
  assert.match(error.message, new RegExp(`waiting for the poller \\(output ${output.length}\\)`));
  assert.ok(output.length > 1);
});

test("freePorts gives distinct ports that can be bound", async () => {
  const ports = await freePorts(5);
  assert.equal(new Set(ports).size, 5);
  const port = await freePort();
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

test("freePorts never hands out a port twice in one process, even one released since", async () => {
  const seen = new Set<number>();
  for (let i = 0; i < 300; i++) {
    const port = await freePort();
    assert.ok(!seen.has(port), `port ${port} handed out twice`);
    seen.add(port);
  }
});

test("tempDir makes a private folder and remove() deletes it", async () => {
  const dir = tempDir("waitfor test");
  assert.match(dir.path, /postroom-waitfor-test-/);
  writeFileSync(join(dir.path, "f"), "x");
  await dir.remove();
  assert.equal(existsSync(dir.path), false);
  await dir.remove();
});
