/**
 * Writes a VIP the way the provider does (provider/maglev/plan.ts): the
 * lb_vip_index slots that change go through ASK around the lb_vips write, so
 * that the program under test finds the VIP through its index slot.
 */
import { MAPS } from "../../provider/maglev/codec";
import { observedVipIndex, vipIndexImage, vipIndexOperations } from "../../provider/maglev/vipIndex";
import { batchText, type MapOperation } from "../../provider/remote/mapOperations";
import type { LoadedProgram } from "../kernel/progRun";

export async function writeVipThroughIndex(lb: LoadedProgram, key: Uint8Array, value: Uint8Array): Promise<void> {
  const others = (await lb.dumpMap(MAPS.vips)).filter((e) => !e.key.equals(Buffer.from(key)));
  const { before, after } = vipIndexOperations(vipIndexImage([...others, { key, value }]), observedVipIndex(await lb.dumpMap(MAPS.vipIndex)), lb.mapPin(MAPS.vipIndex));
  const write: MapOperation = { op: "update", map: lb.mapPin(MAPS.vips), key, value };
  await lb.batchText(batchText([...before, write, ...after]));
}
