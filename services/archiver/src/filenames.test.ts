import assert from "node:assert/strict";
import { test } from "node:test";
import { seededRandom } from "@postroom/testkit";
import { sanitizeFileName, visibleName } from "./filenames.js";

const DEVICE = /^(con|prn|aux|nul|com[0-9]|lpt[0-9]|conin\$|conout\$|clock\$)(\s*\..*)?$/i;
// Everything a stored name must never contain (checked on the NFKC form as well).
// eslint-disable-next-line no-control-regex -- control characters are what must not be there
const FORBIDDEN = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}/\\:*?"<>|\u0000-\u001f\u3164\u115f\u1160\uffa0\u2800]/u;

function assertSafe(name: string, why: string): void {
  assert.ok(name.length > 0, `${why}: not empty`);
  assert.ok(!FORBIDDEN.test(name) && !FORBIDDEN.test(name.normalize("NFKC")), `${why}: ${JSON.stringify(name)} has no separators, reserved, control or invisible characters`);
  assert.ok(Buffer.byteLength(name) <= 120, `${why}: ${Buffer.byteLength(name)} bytes at most 120`);
  assert.ok(!/^[\s.-]/u.test(name), `${why}: ${JSON.stringify(name)} does not start with a dot, dash or space`);
  assert.ok(!/[\s.]$/u.test(name), `${why}: ${JSON.stringify(name)} does not end with a dot or space`);
  const nfkc = name.normalize("NFKC");
  assert.ok(!DEVICE.test(nfkc) && !DEVICE.test(nfkc.split(".")[0]!.trim()), `${why}: ${JSON.stringify(name)} is not a Windows device name`);
}

test("hostile attachment names cannot leave the message folder or collide", () => {
  const taken = new Set<string>();
  const names = [
    sanitizeFileName("../../etc/passwd", 1, taken),
    sanitizeFileName("CON", 2, taken),
    sanitizeFileName("evil\nname\r.txt", 3, taken),
    sanitizeFileName("report.pdf", 4, taken),
    sanitizeFileName("report.pdf", 5, taken),
    sanitizeFileName(`${"a".repeat(300)}.docx`, 6, taken),
    sanitizeFileName(undefined, 7, taken, "application/pdf"),
    sanitizeFileName("..", 8, taken),
  ];
  for (const n of names) assertSafe(n, n);
  assert.equal(names[0], "_.._etc_passwd");
  assert.equal(names[1], "_CON");
  assert.equal(names[2], "evilname.txt");
  assert.equal(names[3], "report.pdf");
  assert.equal(names[4], "report-2.pdf");
  assert.ok(names[5]!.endsWith(".docx"));
  assert.equal(names[6], "attachment-7.pdf");
  assert.equal(names[7], "attachment-8.bin");
  assert.equal(new Set(names.map((n) => n.toLowerCase())).size, names.length, "all unique");
});

test("the names from issue 11 come out safe, readable and with their real extension", () => {
  const cases: [string | undefined, string | undefined, string][] = [
    ["COM¹.txt", "text/plain", "_COM1.txt"],
    ["com²", undefined, "_com2"],
    ["CONIN$", undefined, "_CONIN$"],
    ["conout$.log", undefined, "_conout$.log"],
    ["ＣＯＮ.txt", undefined, "_CON.txt"],
    ["report\u202efdp.bat", undefined, "reportfdp.bat"],
    ["\u2066invoice\u2069.pdf\u200f", undefined, "invoice.pdf"],
    ["\u200b", "application/pdf", "attachment-1.pdf"],
    ["\u200b\u200c\u200d\u2060\ufeff", "image/png", "attachment-1.png"],
    ["\u3164", "image/jpeg", "attachment-1.jpg"],
    ["line\u2028break\u2029.txt", undefined, "linebreak.txt"],
    ["-rf.txt", undefined, "rf.txt"],
    ["--help", undefined, "help"],
    [".htaccess", undefined, "attachment-1.htaccess"],
    ["\ufeff.pdf", "application/pdf", "attachment-1.pdf"],
    ["invoice\ufeff.pdf", "application/pdf", "invoice.pdf"],
    ["full／width：name.pdf", undefined, "full_width_name.pdf"],
    [undefined, "message/rfc822", "attachment-1.eml"],
    ["Fwd: your order", "message/rfc822", "Fwd_ your order.eml"],
    ["forwarded.eml", "message/rfc822", "forwarded.eml"],
    ["soft\u00adhyphen.doc", undefined, "softhyphen.doc"],
    ["tag\u{e0041}\u{e0042}.txt", undefined, "tag.txt"],
    ["ﬁle.txt", undefined, "file.txt"],
    ["name   with\u3000spaces.txt", undefined, "name with spaces.txt"],
    ["trailing dots... ", undefined, "trailing dots"],
  ];
  for (const [original, type, want] of cases) {
    const got = sanitizeFileName(original, 1, new Set(), type);
    assert.equal(got, want, JSON.stringify(original));
    assertSafe(got, JSON.stringify(original));
  }
  assert.equal(visibleName("report\u202efdp.bat"), "reportfdp.bat");
});

// Pieces hostile names are made of, weighted towards the dangerous ones.
const PIECES = [
  "CON", "prn", "AUX", "nul", "COM", "LPT", "CONIN$", "conout$", "clock$", "¹", "²", "³", "⁹", ".", "..", "-", " ", "\u3000", ".pdf", ".exe", ".txt", ".eml",
  "/", "\\", ":", "*", "?", '"', "<", ">", "|", "\u202e", "\u202d", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff",
  "\u00ad", "\u2028", "\u2029", "\u0000", "\n", "\r", "\t", "\u007f", "\u0085", "\u3164", "\u115f", "\ufe0f", "\u{e0041}", "\ud800", "\udc00", "\ue000", "ＣＯＮ", "／",
  "ﬁ", "a", "Z", "9", "é", "e\u0301", "日本", "ع", "😀", "👩‍💻",
];

test("property: 5,000 random Unicode names always give a safe, unique name that keeps a real extension", () => {
  const next = seededRandom(0x11a);
  for (let run = 0; run < 500; run++) {
    const taken = new Set<string>();
    const stored: string[] = [];
    for (let i = 1; i <= 10; i++) {
      let original = "";
      const length = Math.floor(next() * 12);
      for (let k = 0; k < length; k++) {
        if (next() < 0.3) original += String.fromCodePoint(Math.floor(next() * 0x30000));
        else original += PIECES[Math.floor(next() * PIECES.length)];
      }
      if (next() < 0.05) original = "x".repeat(200) + original;
      const type = ["application/pdf", "message/rfc822", undefined, "image/png"][Math.floor(next() * 4)];
      const given = next() < 0.05 ? undefined : original;
      const name = sanitizeFileName(given, i, taken, type);
      const why = `run ${run} #${i} ${JSON.stringify(given)}`;
      assertSafe(name, why);
      if (type === "message/rfc822") assert.ok(name.toLowerCase().endsWith(".eml"), `${why}: ${name} ends in .eml`);
      const ext = given === undefined ? undefined : /\.([a-z0-9]{1,10})$/i.exec(visibleName(given).replace(/[\s.]+$/u, ""))?.[1];
      if (ext && type !== "message/rfc822" && Buffer.byteLength(original) < 100) assert.ok(name.toLowerCase().endsWith(`.${ext.toLowerCase()}`), `${why}: ${name} keeps .${ext}`);
      stored.push(name);
    }
    assert.equal(new Set(stored.map((n) => n.toLowerCase())).size, stored.length, `run ${run}: unique ${JSON.stringify(stored)}`);
  }
});
