import assert from "node:assert/strict";
import { test } from "node:test";
import { fingerprint, remapDecision } from "./ingested-index.js";

test("the fingerprint depends on both the Message-ID and the raw bytes' hash", () => {
  const h = "a".repeat(64);
  assert.equal(fingerprint("<x@y>", h), fingerprint(" <x@y> ", h));
  assert.notEqual(fingerprint("<x@y>", h), fingerprint("<z@y>", h));
  assert.notEqual(fingerprint("<x@y>", h), fingerprint("<x@y>", "b".repeat(64)));
  assert.notEqual(fingerprint(undefined, h), fingerprint("<x@y>", h));
});

test("after a UIDVALIDITY change a message published before is mapped, not offered again", () => {
  assert.equal(remapDecision([{ key: "old/1", uidValidity: 7 }], "new/5", 8), "mapped");
});

test("a message never published before is new, so mail arriving during the change is not skipped", () => {
  assert.equal(remapDecision([], "new/6", 8), "new");
});

test("two identical copies stay two: one mapped to the earlier copy, the second one new", () => {
  const entries = [
    { key: "old/1", uidValidity: 7 },
    { key: "new/5", uidValidity: 8 },
  ];
  assert.equal(remapDecision(entries, "new/9", 8), "new");
  assert.equal(remapDecision([...entries, { key: "old/2", uidValidity: 7 }], "new/9", 8), "mapped");
});

test("a key already handled before a crash is done, whatever it was", () => {
  assert.equal(remapDecision([{ key: "old/1", uidValidity: 7 }, { key: "new/5", uidValidity: 8 }], "new/5", 8), "done");
});
