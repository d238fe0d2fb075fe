// Signs `POST /api/closeposition` answers the way a JavaScript client would, with no field mapped by hand.
//
// stdin: JSON `{"key": "0x<private key>", "answers": ["<HTTP response body>", ...]}`; each body is parsed here
// with `JSON.parse`, exactly as a browser or Node client receives it. stdout: JSON, one entry per answer:
//   reparsed    JSON.stringify(JSON.parse(body)): equal to the body's value in Python iff no number was rounded
//   transaction the `transaction` object's quantities read with BigInt, as decimal strings
//   viem        parseTransaction(serializedTransaction), signed by privateKeyToAccount(key).signTransaction
//   ethers      Transaction.from(serializedTransaction), signed by new Wallet(key).signTransaction
// where viem and ethers each give `fields` (what they decoded, bigints as decimal strings), `reserialized`
// (their own unsigned serialization of what they decoded) and `signed` (the raw signed transaction).
import { parseTransaction, serializeTransaction } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { Transaction, Wallet } from "ethers";

const QUANTITIES = ["chainId", "nonce", "gas", "value", "maxFeePerGas", "maxPriorityFeePerGas", "gasPrice"];

function decimal(value) {
  return value === undefined || value === null ? null : BigInt(value).toString();
}

function fields(tx, gasName) {
  const out = { to: tx.to, data: tx.data };
  for (const name of QUANTITIES) {
    out[name] = decimal(name === "gas" ? tx[gasName] : tx[name]);
  }
  out.value = decimal(tx.value ?? 0n); // viem leaves a zero value out of what it parses
  return out;
}

async function viemSign(serialized, key) {
  const tx = parseTransaction(serialized);
  return {
    type: tx.type,
    fields: fields(tx, "gas"),
    reserialized: serializeTransaction(tx),
    signed: await privateKeyToAccount(key).signTransaction(tx),
  };
}

async function ethersSign(serialized, key) {
  const tx = Transaction.from(serialized);
  return {
    type: tx.type,
    fields: fields(tx, "gasLimit"),
    reserialized: tx.unsignedSerialized,
    signed: await new Wallet(key).signTransaction(tx),
  };
}

async function sign(body, key) {
  const answer = JSON.parse(body);
  const transaction = {};
  for (const name of QUANTITIES) {
    transaction[name] = decimal(answer.transaction[name]);
  }
  return {
    reparsed: JSON.stringify(answer),
    transaction,
    viem: await viemSign(answer.serializedTransaction, key),
    ethers: await ethersSign(answer.serializedTransaction, key),
  };
}

let input = "";
for await (const chunk of process.stdin) {
  input += chunk;
}
const request = JSON.parse(input);
const results = [];
for (const body of request.answers) {
  results.push(await sign(body, request.key));
}
process.stdout.write(JSON.stringify(results));
