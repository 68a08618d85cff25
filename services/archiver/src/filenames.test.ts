import assert from "node:assert/strict";
import { test } from "node:test";
import { sanitizeFileName } from "./filenames.js";

test("hostile attachment names cannot leave the message folder or collide", () => {
  const taken = new Set<string>();
  const names = [
    sanitizeFileName("../../etc/passwd", 1, taken),
    sanitizeFileName("CON", 2, taken),
    sanitizeFileName("evil\nname\r.txt", 3, taken),
    sanitizeFileName("report.pdf", 4, taken),
    sanitizeFileName("report.pdf", 5, taken),
    sanitizeFileName(`${"a".repeat(300)}.docx`, 6, taken),
    sanitizeFileName(undefined, 7, taken),
    sanitizeFileName("..", 8, taken),
  ];
  for (const n of names) {
    assert.ok(!n.includes("/") && !n.includes("\\"), `${n} has no separators`);
    // eslint-disable-next-line no-control-regex -- looking for control characters
    assert.ok(!/[\u0000-\u001f]/.test(n), `${JSON.stringify(n)} has no control characters`);
    assert.ok(Buffer.byteLength(n) <= 120, `${n.length} bytes at most 120`);
    assert.ok(!n.startsWith("."), `${n} is not hidden or relative`);
  }
  assert.equal(names[1], "_CON");
  assert.equal(names[2], "evilname.txt");
  assert.equal(names[3], "report.pdf");
  assert.equal(names[4], "report-2.pdf");
  assert.ok(names[5]!.endsWith(".docx"));
  assert.equal(names[6], "part-7");
  assert.equal(new Set(names.map((n) => n.toLowerCase())).size, names.length, "all unique");
});
