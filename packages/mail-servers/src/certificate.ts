import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { findBinary } from "./daemon.js";

const run = promisify(execFile);

/** A self-signed certificate written to disk. */
export interface SelfSignedCertificate {
  /** PEM certificate file (also usable as the CA a client trusts, e.g. NODE_EXTRA_CA_CERTS). */
  certPath: string;
  /** PEM private key file (unencrypted). */
  keyPath: string;
  /** The certificate's PEM text, for `tls.connect({ ca })`. */
  certPem: string;
}

/**
 * Makes a throwaway self-signed certificate for `localhost` and 127.0.0.1 with the openssl CLI
 * (openssl is in Debian's base install and in scripts/test-env.sh's package list). An EC P-256 key
 * takes milliseconds, where RSA-2048 costs a noticeable fraction of a second per test file.
 */
export async function selfSignedCertificate(dir: string, commonName = "localhost"): Promise<SelfSignedCertificate> {
  const openssl = findBinary("openssl", "POSTROOM_OPENSSL_BIN");
  const certPath = join(dir, `${commonName}.crt`);
  const keyPath = join(dir, `${commonName}.key`);
  await run(openssl, [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${commonName}`,
    "-addext",
    `subjectAltName=DNS:${commonName},DNS:localhost,IP:127.0.0.1`,
    "-keyout",
    keyPath,
    "-out",
    certPath,
  ]);
  return { certPath, keyPath, certPem: await readFile(certPath, "utf8") };
}
