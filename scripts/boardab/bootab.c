// SPDX-License-Identifier: GPL-2.0+
/*
 * bootab: SigmaStar's A/B boot command, for the project's qemu test board (added to Debian's
 * u-boot source by scripts/boardvm_ab.py). It also plays the part of SigmaStar's IPL, which
 * acts on slot_metadata before u-boot on a real board (a binary there; this is the project's
 * documented reading of it, docs/AB.md).
 *
 * Environment:
 *   slot_select    the slot to boot, 0 (A) or 1 (B)
 *   slot_number    how many slots (2)
 *   slot_metadata  one byte per slot, comma-separated: "0x8f,0x3f"
 *                  bit 7 (0x80) successful boot, bits 4-6 tries remaining, bits 0-3 priority
 *   bootcmd_a, bootcmd_b   how each slot boots
 *
 * A slot is bootable when its priority is not 0 and it booted successfully or has tries
 * left. slot_select is booted when it is bootable; otherwise the bootable slot of the
 * highest priority (a fallback: slot_select follows it). A slot not yet marked successful
 * pays one try, saved before it boots, so a kernel that hangs or panics has used it. When
 * bootcmd_<slot> returns (the image does not boot: bad hash, not an image), the slot's tries
 * and successful bit are cleared, the env saved and the board reset: the next pass falls back.
 */
#include <common.h>
#include <command.h>
#include <env.h>
#include <vsprintf.h>
#include <linux/ctype.h>

#define AB_MAX 4
#define AB_SUCCESS 0x80
#define AB_TRIES(b) (((b) >> 4) & 7)
#define AB_PRIO(b) ((b) & 15)

static int ab_parse(const char *s, unsigned char *meta, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		char *end;

		meta[i] = 0;
		if (!s || !*s)
			continue;
		meta[i] = simple_strtoul(s, &end, 0) & 0xff;
		s = end;
		while (*s && *s != ',')
			s++;
		if (*s == ',')
			s++;
	}
	return 0;
}

static void ab_store(const unsigned char *meta, int n, int sel)
{
	char buf[8 * AB_MAX];
	int i, o = 0;

	for (i = 0; i < n; i++)
		o += sprintf(buf + o, "%s0x%02x", i ? "," : "", meta[i]);
	env_set("slot_metadata", buf);
	env_set_ulong("slot_select", sel);
}

static int bootable(unsigned char b)
{
	return AB_PRIO(b) && ((b & AB_SUCCESS) || AB_TRIES(b));
}

static int do_bootab(struct cmd_tbl *cmdtp, int flag, int argc, char *const argv[])
{
	unsigned char meta[AB_MAX], before[AB_MAX];
	int n = env_get_ulong("slot_number", 10, 2);
	int sel = env_get_ulong("slot_select", 10, 0);
	int i, pick = -1;
	char cmd[32];

	if (n < 1 || n > AB_MAX)
		n = 2;
	if (sel < 0 || sel >= n)
		sel = 0;
	ab_parse(env_get("slot_metadata"), meta, n);
	memcpy(before, meta, n);
	if (bootable(meta[sel])) {
		pick = sel;
	} else {
		for (i = 0; i < n; i++)
			if (bootable(meta[i]) && (pick < 0 || AB_PRIO(meta[i]) > AB_PRIO(meta[pick])))
				pick = i;
		if (pick >= 0)
			printf("bootab: slot %c has no tries left, falling back to slot %c\n", 'A' + sel, 'A' + pick);
	}
	if (pick < 0) {
		printf("bootab: no bootable slot, trying slot %c\n", 'A' + sel);
		pick = sel;
	}
	if (!(meta[pick] & AB_SUCCESS) && AB_TRIES(meta[pick]))
		meta[pick] -= 0x10;
	if (pick != sel || memcmp(before, meta, n)) {
		ab_store(meta, n, pick);
		env_save();
	}
	printf("bootab: booting slot %c (slot_select=%d slot_metadata=%s)\n", 'A' + pick, pick,
	       env_get("slot_metadata"));
	snprintf(cmd, sizeof(cmd), "run bootcmd_%c", 'a' + pick);
	run_command(cmd, 0);
	printf("bootab: slot %c did not boot, marking it failed\n", 'A' + pick);
	meta[pick] &= 0x0f;
	ab_store(meta, n, pick);
	env_save();
	do_reset(NULL, 0, 0, NULL);
	return CMD_RET_FAILURE;
}

U_BOOT_CMD(
	bootab, 1, 0, do_bootab,
	"boot the A/B slot that slot_select and slot_metadata pick",
	"\n    - SigmaStar's A/B boot: slot_select, slot_number, slot_metadata, bootcmd_a, bootcmd_b"
);
