// Signs `GET /api/relay/typed-data` answers the way a JavaScript wallet or client would, with no field mapped
// by hand.
//
// stdin: JSON `{"key": "0x<private key>", "answers": ["<HTTP response body>", ...]}`; each body is parsed here
// with `JSON.parse`. stdout: JSON, one entry per answer: the signature of its `typedData` by viem
// (privateKeyToAccount(key).signTypedData) and by ethers v6 (new Wallet(key).signTypedData). Both take the
// payload as served: domain, types (ethers without `EIP712Domain`, which it derives from the domain itself),
// primaryType and message, uint256 values as the decimal strings the relayer sends.
import { privateKeyToAccount } from "viem/accounts";
import { Wallet } from "ethers";

async function sign(body, key) {
  const { typedData } = JSON.parse(body);
  const { EIP712Domain, ...types } = typedData.types;
  return {
    viem: await privateKeyToAccount(key).signTypedData({
      domain: typedData.domain,
      types,
      primaryType: typedData.primaryType,
      message: typedData.message,
    }),
    ethers: await new Wallet(key).signTypedData(typedData.domain, types, typedData.message),
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
