// Compile contracts/src with the pinned npm `solc` and write one artifact per contract to
// contracts/build/<Name>.json, plus build/manifest.json (compiler, settings, source hashes).
// Usage: node contracts/compile.mjs [--out DIR]   (DIR defaults to contracts/build)
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import solc from 'solc';

const here = path.dirname(fileURLToPath(import.meta.url));
const srcDir = path.join(here, 'src');
const outFlag = process.argv.indexOf('--out');
const outDir = outFlag > 0 ? path.resolve(process.argv[outFlag + 1]) : path.join(here, 'build');

const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function listSources(dir, prefix = '') {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const rel = prefix + entry.name;
    if (entry.isDirectory()) return listSources(path.join(dir, entry.name), rel + '/');
    return entry.name.endsWith('.sol') ? [rel] : [];
  }).sort();
}

const sources = {};
const hashes = {};
for (const rel of listSources(srcDir)) {
  const content = fs.readFileSync(path.join(srcDir, rel), 'utf8');
  sources[rel] = { content };
  hashes[rel] = crypto.createHash('sha256').update(content).digest('hex');
}

const output = JSON.parse(solc.compile(JSON.stringify({ language: 'Solidity', sources, settings })));
const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

fs.mkdirSync(outDir, { recursive: true });
for (const f of fs.readdirSync(outDir)) if (f.endsWith('.json')) fs.rmSync(path.join(outDir, f));
const names = [];
for (const [source, contracts] of Object.entries(output.contracts)) {
  if (source.startsWith('lib/')) continue; // libraries and interfaces are inlined
  for (const [name, c] of Object.entries(contracts)) {
    if (c.evm.bytecode.object.length === 0) continue; // abstract contracts and interfaces
    const artifact = {
      contractName: name,
      sourceName: source,
      abi: c.abi,
      bytecode: '0x' + c.evm.bytecode.object,
      deployedBytecode: '0x' + c.evm.deployedBytecode.object,
    };
    fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 1) + '\n');
    names.push(name);
  }
}
const manifest = { compiler: solc.version(), settings, sources: hashes, contracts: names.sort() };
fs.writeFileSync(path.join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 1) + '\n');
console.log(`compiled ${names.length} contracts with solc ${solc.version()} into ${path.relative(process.cwd(), outDir) || '.'}`);
