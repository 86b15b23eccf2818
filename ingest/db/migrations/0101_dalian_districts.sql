-- The pilot city's districts (Dalian), so enterprises can be imported against them right away.
-- Codes are the administrative division codes (GB/T 2260) of each county-level unit.
INSERT INTO districts (id, name_zh, name_en) VALUES
    ('210202', '中山区', 'Zhongshan District'),
    ('210203', '西岗区', 'Xigang District'),
    ('210204', '沙河口区', 'Shahekou District'),
    ('210211', '甘井子区', 'Ganjingzi District'),
    ('210212', '旅顺口区', 'Lüshunkou District'),
    ('210213', '金州区', 'Jinzhou District'),
    ('210214', '普兰店区', 'Pulandian District'),
    ('210281', '瓦房店市', 'Wafangdian City'),
    ('210283', '庄河市', 'Zhuanghe City'),
    ('210224', '长海县', 'Changhai County')
ON CONFLICT (id) DO NOTHING;
