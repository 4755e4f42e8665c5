def test_build(real_encoder_dir):
    print(real_encoder_dir)
