"""Real Chinese text for the tests: classical poems and short prose (public domain, written out here), ~4 kB.

`write_zh_files` spreads them over many small files, as a user's folder of Chinese text files is; `bert_gpt2`
builds a BERT-vocabulary GPT-2 folder the way GPT2-Chinese and the CLUECorpus checkpoints are built.
"""

from __future__ import annotations

import json
from pathlib import Path

POEMS = [
    "静夜思\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
    "春晓\n春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。",
    "登鹳雀楼\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。",
    "相思\n红豆生南国，春来发几枝。\n愿君多采撷，此物最相思。",
    "江雪\n千山鸟飞绝，万径人踪灭。\n孤舟蓑笠翁，独钓寒江雪。",
    "鹿柴\n空山不见人，但闻人语响。\n返景入深林，复照青苔上。",
    "望庐山瀑布\n日照香炉生紫烟，遥看瀑布挂前川。\n飞流直下三千尺，疑是银河落九天。",
    "早发白帝城\n朝辞白帝彩云间，千里江陵一日还。\n两岸猿声啼不住，轻舟已过万重山。",
    "凉州词\n黄河远上白云间，一片孤城万仞山。\n羌笛何须怨杨柳，春风不度玉门关。",
    "出塞\n秦时明月汉时关，万里长征人未还。\n但使龙城飞将在，不教胡马度阴山。",
    "枫桥夜泊\n月落乌啼霜满天，江枫渔火对愁眠。\n姑苏城外寒山寺，夜半钟声到客船。",
    "游子吟\n慈母手中线，游子身上衣。\n临行密密缝，意恐迟迟归。\n谁言寸草心，报得三春晖。",
    "悯农\n锄禾日当午，汗滴禾下土。\n谁知盘中餐，粒粒皆辛苦。",
    "咏鹅\n鹅，鹅，鹅，曲项向天歌。\n白毛浮绿水，红掌拨清波。",
    "回乡偶书\n少小离家老大回，乡音无改鬓毛衰。\n儿童相见不相识，笑问客从何处来。",
    "送元二使安西\n渭城朝雨浥轻尘，客舍青青柳色新。\n劝君更尽一杯酒，西出阳关无故人。",
    "山行\n远上寒山石径斜，白云生处有人家。\n停车坐爱枫林晚，霜叶红于二月花。",
    "清明\n清明时节雨纷纷，路上行人欲断魂。\n借问酒家何处有，牧童遥指杏花村。",
    "江南春\n千里莺啼绿映红，水村山郭酒旗风。\n南朝四百八十寺，多少楼台烟雨中。",
    "题西林壁\n横看成岭侧成峰，远近高低各不同。\n不识庐山真面目，只缘身在此山中。",
    "春夜喜雨\n好雨知时节，当春乃发生。\n随风潜入夜，润物细无声。\n野径云俱黑，江船火独明。\n晓看红湿处，花重锦官城。",
    "绝句\n两个黄鹂鸣翠柳，一行白鹭上青天。\n窗含西岭千秋雪，门泊东吴万里船。",
]
PROSE = [
    "陋室铭\n山不在高，有仙则名。水不在深，有龙则灵。斯是陋室，惟吾德馨。苔痕上阶绿，草色入帘青。谈笑有鸿儒，"
    "往来无白丁。可以调素琴，阅金经。无丝竹之乱耳，无案牍之劳形。南阳诸葛庐，西蜀子云亭。孔子云：何陋之有？",
    "爱莲说\n水陆草木之花，可爱者甚蕃。晋陶渊明独爱菊。自李唐来，世人甚爱牡丹。予独爱莲之出淤泥而不染，濯清涟而"
    "不妖，中通外直，不蔓不枝，香远益清，亭亭净植，可远观而不可亵玩焉。",
    "桃花源记\n晋太元中，武陵人捕鱼为业。缘溪行，忘路之远近。忽逢桃花林，夹岸数百步，中无杂树，芳草鲜美，落英缤纷。"
    "渔人甚异之，复前行，欲穷其林。林尽水源，便得一山，山有小口，仿佛若有光。",
    "论语\n子曰：学而时习之，不亦说乎？有朋自远方来，不亦乐乎？人不知而不愠，不亦君子乎？子曰：温故而知新，"
    "可以为师矣。子曰：学而不思则罔，思而不学则殆。",
]
TEXTS = POEMS + PROSE


def write_zh_files(folder: Path, n_files: int, *, suffix: str = ".txt", encoding: str = "utf-8") -> list[Path]:
    """n_files small files under folder (in nested subfolders), text i being TEXTS[i % len(TEXTS)]."""
    out = []
    for i in range(n_files):
        path = folder / f"part{i % 7}" / f"{i:05d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((TEXTS[i % len(TEXTS)] + "\n").encode(encoding))
        out.append(path)
    return out


def bert_gpt2(folder: Path, *, n_positions: int = 64) -> Path:
    """A GPT-2 with a BERT vocabulary, as GPT2-Chinese/CLUECorpus checkpoints are: vocab.txt ([PAD] [UNK] [CLS]
    [SEP] [MASK], the characters, a few Latin words), GPT2LMHeadModel(vocab_size=len(vocab)) whose config keeps
    GPT2Config's default bos/eos 50256, and `tokenizer_class: BertTokenizer` in config.json -- no tokenizer.json."""
    from transformers import GPT2Config, GPT2LMHeadModel

    chars = sorted({c for text in TEXTS for c in text if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, "hello", "world", "gp", "##t"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = GPT2Config(vocab_size=len(vocab), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                        tokenizer_class="BertTokenizer")
    GPT2LMHeadModel(config).save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert cfg["eos_token_id"] == 50256 and cfg["vocab_size"] == len(vocab)  # the trap the code must avoid
    return folder
