import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatPrefix, parsePinoLine, renderLogLine } from "./log-format.js";

const time = new Date(2026, 4, 6, 7, 8, 9, 10).getTime(); // local time, as the terminal shows it

describe("renderLogLine", () => {
  it("renders a pino line as time, level, message and its own fields", () => {
    const line = JSON.stringify({ level: 30, time, pid: 42, hostname: "box", msg: "mail received", tenant: "acme", uid: 17, subject: "Hello there" });
    assert.deepEqual(renderLogLine(line, { colour: false }), ['07:08:09.010 INFO  mail received tenant=acme uid=17 subject="Hello there"']);
  });

  it("shows an error's type and message, and its stack for error-level lines", () => {
    const err = { type: "TypeError", message: "boom", stack: "TypeError: boom\n    at a (x.ts:1:1)\n    at b (y.ts:2:2)" };
    const [first, ...stack] = renderLogLine(JSON.stringify({ level: 50, time, msg: "poll failed", err }), { colour: false });
    assert.equal(first, '07:08:09.010 ERROR poll failed err="TypeError: boom"');
    assert.deepEqual(stack, ["    at a (x.ts:1:1)", "    at b (y.ts:2:2)"]);
    assert.equal(renderLogLine(JSON.stringify({ level: 40, time, msg: "retrying", err }), { colour: false }).length, 1, "no stack below error level");
  });

  it("caps the number of fields and the length of values", () => {
    const fields = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`f${i}`, i]));
    const [line] = renderLogLine(JSON.stringify({ level: 20, time, msg: "many", ...fields, big: "x".repeat(500) }), { colour: false });
    assert.match(line ?? "", /^07:08:09\.010 DEBUG many f0=0 f1=1 f2=2 f3=3 f4=4 f5=5 \(\+4 more\)$/);
    const [long] = renderLogLine(JSON.stringify({ level: 30, time, msg: "m", big: "x".repeat(500) }), { colour: false });
    assert.ok((long?.length ?? 0) < 200);
  });

  it("leaves out the service field when the prefix already names that service", () => {
    const line = JSON.stringify({ level: 30, time, msg: "started", service: "archiver", tenant: "acme" });
    assert.deepEqual(renderLogLine(line, { colour: false, service: "archiver" }), ["07:08:09.010 INFO  started tenant=acme"]);
    assert.deepEqual(renderLogLine(line, { colour: false, service: "imap-poller" }), ["07:08:09.010 INFO  started service=archiver tenant=acme"]);
  });

  it("passes anything that is not a pino record through unchanged", () => {
    for (const line of ["plain", "{not json}", '{"a":1}', "[1,2]", ""]) assert.deepEqual(renderLogLine(line, { colour: false }), [line]);
    assert.equal(parsePinoLine('{"level":30,"msg":"x"}')?.msg, "x");
  });

  it("uses colour codes only when colour is on", () => {
    const line = JSON.stringify({ level: 50, time, msg: "x" });
    assert.ok(!renderLogLine(line, { colour: false })[0]?.includes("\x1b["));
    assert.ok(renderLogLine(line, { colour: true })[0]?.includes("\x1b[31mERROR"));
    assert.equal(formatPrefix("nats", 8, undefined), "nats     │ ");
  });
});
